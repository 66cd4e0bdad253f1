"""fediverse-pasture's actors and actor verifier (bovine underneath), served on loopback for the tests.

``python -m tests.federation.pasture_server PORT DIR`` serves, with uvicorn:

* pasture's ``BlueprintForActors``: its verification actors (alice, bob, claire...),
  its application actor, and ``follower``, an actor whose inbox and profile both
  demand a valid HTTP signature (bovine's ``SignatureChecker`` verifies ours, fetching
  our key with its own signed GET);
* ``GET /verify?actor_uri=...``: pasture's ``ActorVerifier`` run against an Essaim actor;
* ``POST /follow?object=...&inbox=...``: ``follower`` sends a signed Follow (a ``BovineActor``);
* ``GET /received``: what ``follower``'s inbox accepted (after the signature check).

Its key material lives in ``DIR/data.toml`` (pasture's ``DataProvider`` keeps it in the
working directory).
"""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

import aiohttp
import uvicorn
from fediverse_pasture.data_provider import DataProvider, bovine_actor_for_actor_data
from fediverse_pasture.data_provider.generate import generate_key_pair
from fediverse_pasture.data_provider.models import ActorData
from fediverse_pasture.server import BlueprintForActors
from fediverse_pasture.server.verify_actor import ActorVerifier
from fediverse_pasture.types import Message
from quart import Quart, request


def build(port: int) -> Quart:
    provider = DataProvider.generate_and_load(False)
    follower = ActorData(
        actor_name="follower",
        user_part="follower",
        key_pairs=[generate_key_pair("main")],
        requires_signed_get_for_actor=True,
        requires_signed_post_for_inbox=True,
    )
    received: list[dict[str, Any]] = []

    async def on_inbox(data: dict[str, Any]) -> None:
        received.append(data)

    app = Quart(__name__)
    actors = [*provider.possible_actors, provider.one_actor, follower]
    app.register_blueprint(BlueprintForActors(actors, on_inbox=on_inbox).blueprint)
    domain = f"127.0.0.1:{port}"

    @app.get("/verify")
    async def verify() -> Any:
        verifier = ActorVerifier(
            actor_list=[*provider.possible_actors, provider.one_actor],
            remote_uri=request.args["actor_uri"],
            domain=domain,
            message=Message(),
            timeout=10,
        )
        verifier.scheme = "http"
        result = await verifier.verify()
        return {"result": result, "messages": verifier.message.response}

    @app.post("/follow")
    async def follow() -> Any:
        actor_id = f"http://{domain}/follower"
        bovine_actor, _ = bovine_actor_for_actor_data(actor_id, follower)
        activity = {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": f"{actor_id}/follows/{secrets.token_hex(8)}",
            "type": "Follow",
            "actor": actor_id,
            "object": request.args["object"],
        }
        async with aiohttp.ClientSession() as session:
            await bovine_actor.init(session=session)
            try:
                response = await bovine_actor.post(request.args["inbox"], activity)
                status = response.status
            except aiohttp.ClientResponseError as exc:
                status = exc.status
        return {"status": status, "follow": activity}

    @app.get("/received")
    async def inbox_content() -> Any:
        return {"items": received}

    @app.get("/ready")
    async def ready() -> Any:
        return {"ok": True}

    return app


if __name__ == "__main__":
    port, directory = int(sys.argv[1]), sys.argv[2]
    os.chdir(directory)
    uvicorn.run(build(port), host="127.0.0.1", port=port, log_level="warning")
