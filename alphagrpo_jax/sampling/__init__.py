"""Generation machinery: interleaved contexts, text decoding, flow-matching image sampling (ODE/SDE + CFG)."""
