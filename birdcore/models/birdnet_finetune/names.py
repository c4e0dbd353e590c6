"""Names of the parts of a fine-tuned BirdNET network (``network.whole_model``), shared by the Keras
code and the Keras-free LiteRT reader (``litert``): the frozen front, the trained tail, the head."""

FRONT, TAIL, HEAD = "birdnet_front", "birdnet_tail", "birdnet_head"
