"""Classify: recognise what each column and header field holds by its content (detectors), then
label datasets with category, sensitivity grade and tier (GB/T 39725 §6.1–6.2; RARE §3.2.4, §3.5)."""
