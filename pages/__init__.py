"""The lab's Gradio UI: one module per page, assembled by `pages.app`. Pages only read the run store and
start or stop jobs through `lab`; they never train, and never import torch themselves."""
