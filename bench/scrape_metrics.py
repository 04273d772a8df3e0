#!/usr/bin/python3
"""Scrapes tallyd's GET /metrics in a loop at a fixed rate over one
keep-alive connection (what a Prometheus server does, much more often), or
measures what one scrape costs (--measure N): bytes and microseconds per
scrape, sequentially. For docs/PERFORMANCE.md, "Serving /metrics".

usage: scrape_metrics.py HOST:PORT --rate PER_SECOND --seconds S
       scrape_metrics.py HOST:PORT --measure N [--path /healthz]  (the HTTP floor)
"""
import argparse
import http.client
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("address")
    p.add_argument("--rate", type=float, default=10)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--measure", type=int, default=0)
    p.add_argument("--path", default="/metrics")
    a = p.parse_args()
    host, port = a.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)

    def scrape():
        conn.request("GET", a.path)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit("scrape: HTTP %d" % r.status)
        return len(body)

    if a.measure:
        scrape()  # warm the connection
        start = time.perf_counter()
        size = 0
        for _ in range(a.measure):
            size = scrape()
        us = (time.perf_counter() - start) / a.measure * 1e6
        print("scrapes=%d bytes=%d us_per_scrape=%.0f" % (a.measure, size, us))
        return
    period = 1.0 / a.rate
    deadline = time.monotonic() + a.seconds
    next_at = time.monotonic()
    n = 0
    while time.monotonic() < deadline:
        scrape()
        n += 1
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print("scrapes=%d rate=%.1f/s" % (n, n / a.seconds))


if __name__ == "__main__":
    main()
