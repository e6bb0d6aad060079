"""``GET /dashboard``: a live page served by NOA itself (no CDN: inline CSS and JS).

The page holds no data. It polls ``GET /v1/dashboard`` (behind auth like every ``/v1`` route,
and for admins only: the master key or an admin-scoped key) every two seconds; when auth is on
it first asks for a key, kept in the tab's ``sessionStorage`` only.
"""

from __future__ import annotations

from pathlib import Path

PAGE = (Path(__file__).parent / "static" / "dashboard.html").read_text(encoding="utf-8")
