"""Business gold assets (gym occupancy, member engagement, workout performance) and their checks."""

business_assets: list = []
business_checks: list = []
