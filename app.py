"""The Hugging Face Space's entry point (README front matter: `app_file: app.py`). The Space sets the host
and port through GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, and SPACE_ID, which turns demo mode on; a login
comes from the LAB_AUTH secret. On your own machine run `llm-lab` instead."""

from pages.app import launch

launch(host=None, port=None)
