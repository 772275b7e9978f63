"""The Hugging Face Space's entry point (README front matter: `app_file: app.py`). The Space sets the host
and port through GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; on your own machine run `llm-lab` instead."""

from pages.app import build

build().launch()
