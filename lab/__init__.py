"""LLM Lifecycle Lab engine: tokenizer -> pretraining -> SFT -> alignment. Imports no gradio."""

__version__ = "0.1.0"
