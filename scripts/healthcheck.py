"""Container health check: ``python scripts/healthcheck.py [dashboard|api]``; exit status 0 when healthy.

dashboard: Streamlit's ``/_stcore/health`` at ``STREAMLIT_SERVER_PORT`` (8501) under
``STREAMLIT_SERVER_BASE_URL_PATH``; api: ``/healthz`` at ``BIRDCLEF_API_PORT`` (8000).  Standard
library only (the images have no curl), and quick: it runs every 30 s.
"""
import os
import sys
import urllib.error
import urllib.request


def health_url(service: str, env=os.environ) -> str:
    if service == "api":
        return f"http://127.0.0.1:{env.get('BIRDCLEF_API_PORT') or 8000}/healthz"
    base = (env.get("STREAMLIT_SERVER_BASE_URL_PATH") or "").strip("/")
    return f"http://127.0.0.1:{env.get('STREAMLIT_SERVER_PORT') or 8501}/{base + '/' if base else ''}_stcore/health"


def main(argv: list[str]) -> int:
    service = argv[0] if argv else "dashboard"
    if service not in ("dashboard", "api") or len(argv) > 1:
        print("usage: python scripts/healthcheck.py [dashboard|api]", file=sys.stderr)
        return 2
    url = health_url(service)
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"{url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"{url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
