"""Ray Tune's PBT and PB2, made to survive a killed driver: a resumed population goes on
as it was, and an exploit decided before a kill is carried out (ray_internals.Resumable,
which rebuilds the schedulers' private per-trial state)."""

from __future__ import annotations

from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.schedulers.pb2 import PB2

from distgan.ray_internals import Resumable


class ResumablePBT(Resumable, PopulationBasedTraining):
    pass


class ResumablePB2(Resumable, PB2):
    pass
