"""Real receivers for tests and benchmarks: a Splunk HEC receiver, a generic HTTP receiver
(both aiohttp, on 127.0.0.1 and a free port, with fault switches) and an rsyslog runner."""
