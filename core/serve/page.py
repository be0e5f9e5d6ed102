"""The web page of `ragloop serve`: `mount(app)` adds `GET /` and the page's static files.

The page is three files shipped inside the package (`static/`), read once at mount time and
served from memory: no build step, nothing fetched from the internet. The page asks through
the same `/v1/ask`, `/v1/compare` and `/v1/feedback` endpoints as any other client, so it
holds no secret and needs no token to load; the token from `?token=T` travels in the
`Authorization` header of the page's own requests.
"""

from __future__ import annotations

from importlib import resources

# (URL, file in static/, media type); the page names the two assets by these URLs.
ASSETS = (
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/static/page.js", "page.js", "text/javascript; charset=utf-8"),
    ("/static/page.css", "page.css", "text/css; charset=utf-8"),
)

# Only the page's own files and its own origin: model text that slipped past escaping could
# still run no script and reach no other host.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def read_asset(name: str) -> bytes:
    """The bytes of one file of the page, from the installed package."""
    return resources.files("ragloop.core.serve").joinpath("static").joinpath(name).read_bytes()


def mount(app) -> None:
    """Serve the page at `/` and its script and style under `/static/` on a FastAPI `app`
    (left out of the OpenAPI schema: they are not part of the API)."""
    from fastapi.responses import Response

    def endpoint(body: bytes, media_type: str):
        # A closure without parameters: FastAPI would read a parameter from the query string.
        def serve():
            return Response(body, media_type=media_type, headers=HEADERS)
        return serve

    for url, name, media_type in ASSETS:
        app.add_api_route(url, endpoint(read_asset(name), media_type), methods=["GET"],
                          include_in_schema=False, name=f"page:{name}")
