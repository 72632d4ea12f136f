"""The explorer's HTML: escaping and layout (``html``), server-side SVG charts (``charts``)
and the pages (``pages``); served by ``api/routes/explorer.py`` under ``/explorer``."""
