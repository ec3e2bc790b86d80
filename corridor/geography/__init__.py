"""Geography: places, great-circle distances, and the fibre delay a route implies.

Stage: model (pure). ``geo`` holds places and distances, ``fibre`` turns a route
into one-way delay. Imports only the spec stage and ``corridor.errors``.
"""

from __future__ import annotations
