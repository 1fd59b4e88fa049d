"""The endpoints llama-swap routes besides the OpenAI text ones: speech
(`/v1/audio/speech`, `/v1/audio/voices`), images (`/v1/images/generations`,
`/v1/images/edits`, a multipart upload whose model is a form field) and
stable-diffusion.cpp's AUTOMATIC1111 API (`/sdapi/v1/txt2img`, `img2img`,
`loras`), each sent by model, unchanged, to the server the catalogue runs for
it (stable-diffusion.cpp's sd-server, a TTS server...); llama-swap's
versionless aliases (`/v/chat/completions`...), relayed without their `/v`
for servers whose API has no `/v1` (llama-swap issue #728); and audio.cpp's
`/audioapi/v1/tasks/run`, relayed as `/v1/tasks/run`.

They are inference routes like api/inference.py's: the same handler reads
the model (JSON `model`, the form field, or `?model=`) and relays the body
byte for byte.
"""

from __future__ import annotations

from aiohttp import web

from router.api.inference import handle_inference
from router.http.access import INFERENCE, Models, declare

# POST, the model in a JSON body (/v1/audio/voices is also a GET with ?model=).
JSON_ROUTES = ("/v1/audio/speech", "/v1/audio/voices", "/v1/images/generations", "/sdapi/v1/txt2img",
               "/sdapi/v1/img2img")
FORM_ROUTES = ("/v1/images/edits",)  # multipart/form-data, the model a form field
GET_ROUTES = ("/v1/audio/voices", "/sdapi/v1/loras")  # ?model=
VERSIONLESS = ("/v/chat/completions", "/v/responses", "/v/completions", "/v/messages",
               "/v/messages/count_tokens", "/v/embeddings", "/v/rerank", "/v/reranking")
# audio.cpp's generic task API, model in the JSON body: /v1/tasks/run on its server.
AUDIOAPI = ("/audioapi/v1/tasks/run",)


@declare(INFERENCE, Models.NAMED)
async def handle_prefixed(request: web.Request) -> web.StreamResponse:
    """`/v/chat/completions` is `/chat/completions` on the model's server, `/audioapi/v1/tasks/run`
    is `/v1/tasks/run` (llama-swap strips both prefixes the same way)."""
    prefix = "/audioapi" if request.path.startswith("/audioapi/") else "/v"
    path = request.path[len(prefix):]
    return await handle_inference(request.clone(rel_url=request.rel_url.with_path(path, keep_query=True)))


def add_media_routes(app: web.Application) -> None:
    r = app.router
    for path in (*JSON_ROUTES, *FORM_ROUTES):
        r.add_post(path, handle_inference)
    for path in GET_ROUTES:
        r.add_get(path, handle_inference)
    for path in (*VERSIONLESS, *AUDIOAPI):
        r.add_post(path, handle_prefixed)
