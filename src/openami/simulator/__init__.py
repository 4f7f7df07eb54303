"""Fleets of simulated meters with realistic households, transformers with check meters, and faults on demand,
on a fast clock. For the demo, tests and benchmarks: production code never imports this package."""

from openami.simulator.faults import FaultCounts, FaultPlan, FaultyLink, Outage
from openami.simulator.fleet import Fleet, FleetStats
from openami.simulator.households import Climate, Habit, Household
from openami.simulator.layout import SimulatedMeterSpec, SimulatedTransformerSpec

__all__ = [
    "Climate",
    "FaultCounts",
    "FaultPlan",
    "FaultyLink",
    "Fleet",
    "FleetStats",
    "Habit",
    "Household",
    "Outage",
    "SimulatedMeterSpec",
    "SimulatedTransformerSpec",
]
