"""Finding models on disk: GGUF metadata, folder and Hugging Face cache scans, downloads.

The bottom layer: it knows files and the Hub, nothing of the catalogue or the server.
"""
