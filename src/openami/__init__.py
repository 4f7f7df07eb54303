"""openami: open-source smart electricity metering, from the meter reading to the paid bill."""

__version__ = "0.1.0"
