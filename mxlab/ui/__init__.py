"""The local web dashboard (`mxlab ui`): a small ASGI app over the Python API, with its
page and script shipped here (no CDN)."""
