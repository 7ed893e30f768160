"""`canal load`: a bounded, self-stopping load test of the gateway on 127.0.0.1, checked against docs/slo.md."""
