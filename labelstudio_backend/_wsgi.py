"""label-studio-ml's entry-point convention: ``gunicorn labelstudio_backend._wsgi:app`` or ``python _wsgi.py``."""

import argparse

from labelstudio_backend.app import create_app, main
from labelstudio_backend.config import BackendConfig

app = create_app(BackendConfig.from_env())  # cheap: the catalog, vectors and model open on first request

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="audiosim Label Studio ML backend")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    main(args.host, args.port)
