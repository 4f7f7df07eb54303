"""Revenue protection: tamper-event correlation, energy balance, anomaly scoring, cases.

`readers` turns the analysts' CSV files into arrays (the only module here that touches files), `features` computes
per-meter evidence from those arrays and `scoring` ranks the meters; both are pure.
"""
