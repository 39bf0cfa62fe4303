"""The local kiosk: the Flask app and its JSON API, the page, its translations, and the waitress server."""
