"""Serve a trained model over HTTP: the chat page, a JSON endpoint and an OpenAI-compatible API.

    python serve.py models/me.pt                        # http://127.0.0.1:8000
    python serve.py models/me.pt --port=8080 --api_key=SECRET
    python serve.py --help                              # every option

The server lives in serving/ (server.py, and chat_page.html beside it); this file only starts it.
"""
from gptlib.errors import run_cli
from serving.server import main

if __name__ == "__main__":
    run_cli(main)
