"""Response compression by the client's ``Accept-Encoding`` (RFC 9110 section 12.5.3), q-values included.

``gzip;q=0`` means gzip is not acceptable, ``*`` stands for any coding not listed, names are
case-insensitive, and ``identity`` (no compression) is acceptable unless refused. The server offers
gzip, then deflate; the client's q-values decide, ties go to the server's order, and an explicitly
listed ``identity`` with a higher q than both means no compression.
"""

from __future__ import annotations

from aiohttp.web import ContentCoding

OFFERED = (ContentCoding.gzip, ContentCoding.deflate)


def parse_accept_encoding(header: str) -> dict[str, float]:
    """``{coding: q}`` of an ``Accept-Encoding`` value, lower-cased; malformed q-values count as q=0."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                q = q if 0.0 <= q <= 1.0 else 0.0  # NaN and out-of-range values are not acceptable
        weights[name.lower()] = q
    return weights


def choose_encoding(header: str | None) -> ContentCoding | None:
    """The coding to compress a response with, or None for identity (no header, nothing acceptable)."""
    if not header:
        return None
    weights = parse_accept_encoding(header)
    star = weights.get("*", 0.0)
    best: ContentCoding | None = None
    best_q = 0.0
    for coding in OFFERED:
        q = weights.get(coding.value, star)
        if q > best_q:
            best, best_q = coding, q
    # identity is the fallback; listed explicitly with a higher q than every offered coding, it wins
    return best if best is not None and best_q >= weights.get("identity", 0.0) else None
