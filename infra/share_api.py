"""The controlled sharing API (HDS §6.5 Table 2, §8.3 Table 5): approved extracts over HTTPS.

Every call is authenticated with a bearer token bound to one data use agreement and expiring
with it (only the token's SHA-256 is stored); every call, refused ones included, is logged with
caller, time, endpoint, volume and result; pulls above the policy's per-minute or per-day limits
are refused with 429 and raise an audited alert naming the agreement (bulk or high-frequency
pulls). Extracts carry the recipient's watermark like any other delivery. It is served only
through ``infra.https`` (TLS); the caller logged is the socket peer, or the client a trusted proxy
(``SEQLIFE_TRUSTED_PROXIES``) names.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from infra.catalog import ApiCall, ApiToken
from infra.resources import Resources
from seqlife.exceptions import SeqlifeError
from seqlife.network import client_address


def create_app(res: Resources) -> FastAPI:
    """The FastAPI application serving one controller's approved extracts."""
    from seqlife.share import rules
    from tasks import share

    app = FastAPI(title="seqlife controlled sharing API", docs_url=None, redoc_url=None,
                  openapi_url=None)
    limits = rules.load_share_policy()["api_limits"]

    def caller(request: Request) -> str:
        return client_address(request.client.host if request.client else None,
                              request.headers.getlist("x-forwarded-for"),
                              res.settings.trusted_proxies)

    def log(request: Request, agreement: str | None, status: int, records: int) -> None:
        with res.sessions.begin() as session:
            session.add(ApiCall(agreement_id=agreement, caller=caller(request),
                                endpoint=request.url.path, status=status, records=records))

    def refuse(request: Request, agreement: str | None, status: int, message: str
               ) -> JSONResponse:
        log(request, agreement, status, 0)
        return JSONResponse({"error": message}, status_code=status)

    def agreement_for(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        digest = hashlib.sha256(header[7:].strip().encode()).hexdigest()
        with res.sessions() as session:
            token = session.get(ApiToken, digest)
            if token is None or token.revoked_at is not None:
                return None
            expires = token.expires_at if token.expires_at.tzinfo else \
                token.expires_at.replace(tzinfo=timezone.utc)
            return token.agreement_id if expires > datetime.now(timezone.utc) else None

    def over_limit(agreement: str, now: datetime) -> str | None:
        with res.sessions() as session:
            recent = session.scalar(select(func.count(ApiCall.id)).where(
                ApiCall.agreement_id == agreement, ApiCall.at >= now - timedelta(minutes=1)))
            today = session.scalar(select(func.coalesce(func.sum(ApiCall.records), 0)).where(
                ApiCall.agreement_id == agreement, ApiCall.at >= now - timedelta(days=1)))
        if recent >= int(limits["calls_per_minute"]):
            return (f"high-frequency pulls: {recent} calls in the last minute (limit "
                    f"{limits['calls_per_minute']})")
        if today >= int(limits["records_per_day"]):
            return (f"bulk pulls: {today} records in the last day (limit "
                    f"{limits['records_per_day']})")
        return None

    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/extract")
    def get_extract(request: Request) -> JSONResponse:
        agreement = agreement_for(request)
        if agreement is None:
            return refuse(request, None, 401, "A valid, unexpired bearer token is required.")
        alert = over_limit(agreement, datetime.now(timezone.utc))
        if alert:
            res.audit.append("share.alert", f"agreement:{agreement}", "blocked",
                             reason=f"API {alert}; caller {caller(request)}, endpoint "
                                    f"{request.url.path}, "
                                    f"at {datetime.now(timezone.utc).isoformat(timespec='seconds')}"
                                    "; calls refused until the window passes (§11.1.2.5)")
            return refuse(request, agreement, 429, f"Refused: {alert}.")
        try:
            frame, meta = share.watermarked_extract(res, agreement)
        except SeqlifeError as exc:
            return refuse(request, agreement, 403, exc.message)
        if meta["tier"] != "api":
            return refuse(request, agreement, 403, "This agreement does not grant API access.")
        log(request, agreement, 200, len(frame))
        share.record_delivery(res, agreement, "api", meta, frame, [], "api:/v1/extract")
        return JSONResponse({"agreement": agreement, "dataset": meta["dataset"],
                             "version": meta["version"], "records": len(frame),
                             "rows": share.as_json(frame)})

    return app
