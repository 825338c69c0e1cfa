"""The ground floor: errors, records, settings and the machine's facts.

Everything may import it; it imports nothing of ours.
"""
