"""`flotilla bench placement`: seeded scenarios, the three policies side by side, tables and plots."""
