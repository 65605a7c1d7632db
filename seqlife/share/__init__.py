"""Share stage: requests, committee review, agreements, delivery rules, watermarks (pure core)."""
