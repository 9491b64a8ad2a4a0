"""`POST /v1/feedback`: a rating of one reply, stored by the memory service."""

from aiohttp import web

from switchboard.gateway.conversations import ConversationMethods, id_problem
from switchboard.gateway.core import ChatCore
from switchboard.gateway.http_auth import HttpAuth
from switchboard.gateway.http_common import RefusingContext, read_json
from switchboard.gateway.http_conversations import memory_methods
from switchboard.gateway.openai_shapes import invalid
from switchboard.v1.chat_pb2 import RATING_DOWN, RATING_UP, SubmitFeedbackRequest


class FeedbackRoutes:
    """Ratings of replies; a browser session may rate only the replies it received."""

    def __init__(
        self, core: ChatCore, auth: HttpAuth, conversations: ConversationMethods | None
    ) -> None:
        self._core = core
        self._auth = auth
        self._conversations = conversations

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/feedback", self._feedback)

    async def _feedback(self, request: web.Request) -> web.Response:
        caller = await self._auth.caller(request, browser_ok=True)
        body = await read_json(request)
        request_id = body.get("request_id")
        if not isinstance(request_id, str):
            raise invalid("request_id", "request_id is required: the reply's sb-request-id")
        problem = id_problem("request_id", request_id)
        if problem:
            raise invalid("request_id", problem)
        ratings = {"up": RATING_UP, "down": RATING_DOWN}
        rating = body.get("rating")
        if rating not in ratings:
            raise invalid("rating", "rating must be 'up' or 'down'")
        comment = body.get("comment", "")
        if not isinstance(comment, str):
            raise invalid("comment", "comment must be a string")
        await self._auth.require_own(caller, "request", request_id)
        feedback = SubmitFeedbackRequest(
            request_id=request_id, rating=ratings[rating], comment=comment
        )
        await memory_methods(self._conversations).submit_feedback(
            caller.tenant.tenant_id,
            self._core.redaction.feedback(feedback, caller.tenant),
            RefusingContext(),
        )
        return web.json_response({"request_id": request_id, "rating": rating, "object": "feedback"})
