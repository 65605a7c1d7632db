"""De-identify: direct identifiers removed, linkage IDs replaced by keyed surrogates, dates shifted,
quasi-identifiers generalised to k >= 5, sequencing headers scrubbed, and a re-identification test on
every output (GB/T 39725 §10.2, Table 6, App. G, §11.4.2.4; RARE §4.5)."""
