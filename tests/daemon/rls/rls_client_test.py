#!/usr/bin/python3
"""An independent client of tallyd's Envoy doors (docs/ENVOY.md).

Speaks gRPC with Debian's python3-grpcio, from stubs generated at test time
out of the project's proto/ (grpc_tools.protoc if present, else protoc
--python_out with a hand-written call), and HTTP with plain sockets. Starts
real tallyd processes on port 0 and stops them by pid.

Usage: rls_client_test.py TALLYD_BINARY PROTO_DIR
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

TALLYD = None
PROTO_DIR = None
GEN = None  # generated modules: (rls_pb2, rls_pb2_grpc, ratelimit_pb2)
WAIT_SCALE = float(os.environ.get("TALLY_TEST_WAIT_SCALE", "1"))
# A minute window frees its hits with their sub-bucket: up to a tenth of the
# window (10 buckets per window by default) after the minute.
MINUTE_RESET_BOUND_S = 66

RULES = """
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    value: /free
    rate_limit: {unlimited: true}
  - key: tier
    value: gold
    rate_limits:
      - {unit: second, requests_per_unit: 5, name: burst}
      - {unit: hour, requests_per_unit: 2, name: hourly}
  - key: canary
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: api
    descriptors:
      - key: user
        value: "team-*"
        rate_limit: {unit: minute, requests_per_unit: 2}
  - key: plan
    rate_limit: {unit: minute, requests_per_unit: 1, name: per_plan}
  - key: vip
    rate_limit: {unit: minute, requests_per_unit: 3, name: vip, replaces: [{name: per_plan}]}
  - key: reload
    rate_limit: {unit: minute, requests_per_unit: %d}
"""


def generate_stubs(out_dir):
    protos = [
        "envoy/type/v3/ratelimit_unit.proto",
        "envoy/config/core/v3/base.proto",
        "envoy/extensions/common/ratelimit/v3/ratelimit.proto",
        "envoy/service/ratelimit/v3/rls.proto",
    ]
    try:
        from grpc_tools import protoc
        import grpc_tools
        include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        rc = protoc.main(["protoc", "-I" + PROTO_DIR, "-I" + include,
                          "--python_out=" + out_dir, "--grpc_python_out=" + out_dir] + protos)
        if rc != 0:
            raise RuntimeError("grpc_tools.protoc failed: %d" % rc)
        have_grpc_stub = True
    except ImportError:
        subprocess.check_call(["protoc", "-I" + PROTO_DIR, "-I/usr/include",
                               "--python_out=" + out_dir] + protos)
        have_grpc_stub = False
    sys.path.insert(0, out_dir)
    from envoy.service.ratelimit.v3 import rls_pb2
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
    rls_pb2_grpc = None
    if have_grpc_stub:
        from envoy.service.ratelimit.v3 import rls_pb2_grpc
    return rls_pb2, rls_pb2_grpc, ratelimit_pb2


class Tallyd:
    """One tallyd child; its listening line gives the bound addresses."""

    def __init__(self, workdir, extra_args):
        self.stderr_path = os.path.join(workdir, "tallyd-%d.log" % id(self))
        self.stderr = open(self.stderr_path, "w")
        args = [TALLYD, "--udp", "127.0.0.1:0", "--unix", "none", "--unix-seq", "none",
                "--threads", "2", "--stats-interval-s", "0"] + extra_args
        # The doors default to 127.0.0.1:8081 and :8080: a door the test does
        # not ask for is off, so tests never claim those ports.
        for door in ("--grpc", "--http"):
            if door not in extra_args:
                args += [door, "none"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("tallyd listening"):
            self.stop()
            raise RuntimeError("tallyd did not start: %r; log: %s" % (line, self.log()))
        self.fields = dict(kv.split("=", 1) for kv in line.split()[2:])

    def log(self):
        with open(self.stderr_path) as f:
            return f.read()

    def signal(self, signo):
        os.kill(self.proc.pid, signo)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20 * WAIT_SCALE)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.stderr.close()
        self.proc.stdout.close()
        return self.proc.returncode


def wait_for(predicate, what, seconds=10.0):
    deadline = time.monotonic() + seconds * WAIT_SCALE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def http_request(address, method, path, body=b"", headers=None):
    """One HTTP/1.1 request on a fresh connection; returns (status, body)."""
    status, _, payload = http_exchange(address, method, path, body, headers)
    return status, payload


def http_exchange(address, method, path, body=b"", headers=None):
    """As http_request; returns (status, {lowercase header name: value}, body)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        head = "%s %s HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n" % (method, path)
        for k, v in (headers or {}).items():
            head += "%s: %s\r\n" % (k, v)
        if body or method == "POST":
            head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status, fields, payload


class RlsClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import grpc
        cls.grpc = grpc
        cls.rls_pb2, cls.rls_pb2_grpc, cls.ratelimit_pb2 = GEN
        cls.dir = tempfile.mkdtemp(prefix="tally-rls-test-")
        cls.rules_path = os.path.join(cls.dir, "rules.yaml")
        with open(cls.rules_path, "w") as f:
            f.write(RULES % 5)
        cls.tallyd = Tallyd(cls.dir, ["--grpc", "127.0.0.1:0", "--http",
                                      "127.0.0.1:0", "--rules", cls.rules_path])
        cls.channel = grpc.insecure_channel(cls.tallyd.fields["grpc"])
        if cls.rls_pb2_grpc is not None:
            cls.stub = cls.rls_pb2_grpc.RateLimitServiceStub(cls.channel)
            cls.call = cls.stub.ShouldRateLimit
        else:
            cls.call = cls.channel.unary_unary(
                "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
                request_serializer=cls.rls_pb2.RateLimitRequest.SerializeToString,
                response_deserializer=cls.rls_pb2.RateLimitResponse.FromString)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        rc = cls.tallyd.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)
        assert rc == 0, "tallyd exited with %s" % rc

    def ask(self, descriptors, hits=0, domain="edge"):
        request = self.rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
        for d in descriptors:
            override = None
            if isinstance(d, tuple):
                d, override = d
            desc = request.descriptors.add()
            for k, v in d:
                desc.entries.add(key=k, value=v)
            if override:
                desc.limit.requests_per_unit, desc.limit.unit = override
        return self.call(request, timeout=10)

    def test_counts_down_then_over_limit(self):
        R = self.rls_pb2.RateLimitResponse
        for remaining in (2, 1, 0):
            r = self.ask([[("remote_address", "10.1.1.1")]])
            self.assertEqual(r.overall_code, R.OK)
            self.assertEqual(len(r.statuses), 1)
            s = r.statuses[0]
            self.assertEqual(s.code, R.OK)
            self.assertEqual(s.current_limit.requests_per_unit, 3)
            self.assertEqual(s.current_limit.unit, R.RateLimit.MINUTE)
            self.assertEqual(s.limit_remaining, remaining)
            # RateLimit-* headers only with --rls-headers.
            self.assertEqual(len(r.response_headers_to_add), 0)
            # The window, plus up to one sub-bucket (a tenth) until its hits leave.
            self.assertTrue(0 < s.duration_until_reset.seconds <= 66)
        r = self.ask([[("remote_address", "10.1.1.1")]])
        self.assertEqual(r.overall_code, R.OVER_LIMIT)
        self.assertEqual(r.statuses[0].code, R.OVER_LIMIT)
        self.assertEqual(r.statuses[0].limit_remaining, 0)
        self.assertEqual(self.ask([[("remote_address", "10.1.1.2")]]).overall_code, R.OK)

    def test_hits_addend(self):
        r = self.ask([[("remote_address", "hits")]], hits=3)
        self.assertEqual(r.statuses[0].limit_remaining, 0)
        self.assertEqual(r.overall_code, self.rls_pb2.RateLimitResponse.OK)
        r = self.ask([[("remote_address", "hits")]])
        self.assertEqual(r.overall_code, self.rls_pb2.RateLimitResponse.OVER_LIMIT)

    def test_unknown_descriptor_is_ok_without_limit(self):
        r = self.ask([[("nope", "x")]])
        self.assertEqual(r.overall_code, self.rls_pb2.RateLimitResponse.OK)
        self.assertFalse(r.statuses[0].HasField("current_limit"))
        r = self.ask([[("remote_address", "x")]], domain="unknown-domain")
        self.assertFalse(r.statuses[0].HasField("current_limit"))

    def test_unlimited_nested_and_wildcard(self):
        R = self.rls_pb2.RateLimitResponse
        for _ in range(5):
            r = self.ask([[("path", "/free")]])
            self.assertEqual(r.overall_code, R.OK)
            self.assertEqual(r.statuses[0].limit_remaining, 2**32 - 1)
        codes = [self.ask([[("api", "v1"), ("user", "team-blue")]]).overall_code
                 for _ in range(3)]
        self.assertEqual(codes, [R.OK, R.OK, R.OVER_LIMIT])
        # Another value under the wildcard has its own counter.
        r = self.ask([[("api", "v1"), ("user", "team-red")]])
        self.assertEqual(r.statuses[0].limit_remaining, 1)
        # Outside the wildcard: no rule.
        r = self.ask([[("api", "v1"), ("user", "solo")]])
        self.assertFalse(r.statuses[0].HasField("current_limit"))

    def test_several_limits_and_several_descriptors(self):
        R = self.rls_pb2.RateLimitResponse
        both = [[("remote_address", "multi")], [("tier", "gold")]]
        r = self.ask(both)
        self.assertEqual(r.overall_code, R.OK)
        self.assertEqual(r.statuses[1].current_limit.name, "hourly")
        self.assertEqual(r.statuses[1].limit_remaining, 1)
        self.ask(both)
        r = self.ask(both)
        self.assertEqual(r.overall_code, R.OVER_LIMIT)
        self.assertEqual([s.code for s in r.statuses], [R.OK, R.OVER_LIMIT])

    def test_shadow_mode_answers_ok(self):
        R = self.rls_pb2.RateLimitResponse
        for _ in range(3):
            r = self.ask([[("canary", "c")]])
            self.assertEqual(r.overall_code, R.OK)
        self.assertEqual(r.statuses[0].limit_remaining, 0)

    def test_limit_override(self):
        R = self.rls_pb2.RateLimitResponse
        d = ([("user", "override")], (1, self.ratelimit_pb2.envoy_dot_type_dot_v3_dot_ratelimit__unit__pb2.MINUTE))
        self.assertEqual(self.ask([d], domain="no-rules").overall_code, R.OK)
        r = self.ask([d], domain="no-rules")
        self.assertEqual(r.overall_code, R.OVER_LIMIT)
        self.assertEqual(r.statuses[0].current_limit.requests_per_unit, 1)

    def test_invalid_requests(self):
        with self.assertRaises(self.grpc.RpcError) as e:
            self.ask([[("remote_address", "x")]], domain="")
        self.assertEqual(e.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(self.grpc.RpcError) as e:
            self.ask([])
        self.assertEqual(e.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(self.grpc.RpcError) as e:
            self.ask([[("k", "v")]] * 65)
        self.assertEqual(e.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(self.grpc.RpcError) as e:
            self.ask([[("k", "v" * 100000)]])
        self.assertEqual(e.exception.code(), self.grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_replaces_drops_the_named_limit_in_the_same_request(self):
        R = self.rls_pb2.RateLimitResponse
        # Alone, per_plan holds: 1 per minute.
        self.assertEqual(self.ask([[("plan", "free")]]).overall_code, R.OK)
        self.assertEqual(self.ask([[("plan", "free")]]).overall_code, R.OVER_LIMIT)
        # Beside vip, per_plan is replaced (counts nothing); vip's 3 per minute decide.
        both = [[("plan", "team")], [("vip", "yes")]]
        for remaining in (2, 1, 0):
            r = self.ask(both)
            self.assertEqual(r.overall_code, R.OK)
            self.assertEqual([s.code for s in r.statuses], [R.OK, R.OK])
            self.assertEqual(r.statuses[1].current_limit.name, "vip")
            self.assertEqual(r.statuses[1].limit_remaining, remaining)
        r = self.ask(both)
        self.assertEqual(r.overall_code, R.OVER_LIMIT)
        self.assertEqual(r.statuses[1].code, R.OVER_LIMIT)
        # per_plan counted none of those: alone, its one hit is still there.
        self.assertEqual(self.ask([[("plan", "team")]]).overall_code, R.OK)
        self.assertEqual(self.ask([[("plan", "team")]]).overall_code, R.OVER_LIMIT)

    def test_y_reload_under_load(self):
        """Calls during a reload see the old or the new rules, never a mix
        within a request, and never the old once they saw the new."""
        import threading
        seen, errors, stop = [], [], threading.Event()

        def load():
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    r = self.ask([[("reload", "load-%d" % n)], [("reload", "load-%d-b" % n)]])
                    seen.append(tuple(s.current_limit.requests_per_unit for s in r.statuses))
                except self.grpc.RpcError as e:
                    errors.append(e.code())
        thread = threading.Thread(target=load)
        thread.start()
        try:
            wait_for(lambda: len(seen) > 50, "calls before the reload")
            with open(self.rules_path, "w") as f:
                f.write(RULES % 6)
            self.tallyd.signal(signal.SIGHUP)
            wait_for(lambda: (6, 6) in seen, "a call under the new rules")
            at = len(seen)
            wait_for(lambda: len(seen) > at + 50, "calls after the reload")
        finally:
            stop.set()
            thread.join()
        self.assertEqual(errors, [])
        self.assertTrue(set(seen) <= {(5, 5), (6, 6)}, set(seen))
        first_new = seen.index((6, 6))
        self.assertNotIn((5, 5), seen[first_new:])
        # Back to the rules the other tests expect.
        with open(self.rules_path, "w") as f:
            f.write(RULES % 5)
        self.tallyd.signal(signal.SIGHUP)
        wait_for(lambda: self.ask([[("reload", "back")]]).statuses[0]
                 .current_limit.requests_per_unit == 5, "the rules restored")

    def test_z_reload(self):
        """SIGHUP and file changes reload; a broken file keeps the old rules."""
        def limit_of(value):
            return self.ask([[("reload", value)]]).statuses[0].current_limit.requests_per_unit
        self.assertEqual(limit_of("a"), 5)
        with open(self.rules_path, "w") as f:
            f.write(RULES % 7)
        self.tallyd.signal(signal.SIGHUP)
        wait_for(lambda: limit_of("b") == 7, "the reloaded limit")
        # A change of the file alone (inotify), written by rename as editors do.
        tmp = self.rules_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(RULES % 9)
        os.rename(tmp, self.rules_path)
        wait_for(lambda: limit_of("c") == 9, "the limit from the changed file")
        # A broken file: rejected with file:line:column, the old rules stay.
        with open(self.rules_path, "w") as f:
            f.write(RULES.replace("requests_per_unit: %d", "requests_per_unt: 1"))
        self.tallyd.signal(signal.SIGHUP)
        wait_for(lambda: "reload of" in self.tallyd.log(), "the rejected reload in the log")
        self.assertRegex(self.tallyd.log(), r"rules\.yaml:\d+:\d+: ")
        self.assertEqual(limit_of("d"), 9)

    # ---- the HTTP door ----

    def test_http_healthcheck_and_json(self):
        address = self.tallyd.fields["http"]
        self.assertEqual(http_request(address, "GET", "/healthcheck"), (200, b"OK"))
        body = json.dumps({"domain": "edge", "descriptors": [
            {"entries": [{"key": "remote_address", "value": "http-1"}]}]}).encode()
        for remaining in (2, 1, 0):
            status, payload = http_request(address, "POST", "/json", body)
            self.assertEqual(status, 200, payload)
            answer = json.loads(payload)
            self.assertEqual(answer["overallCode"], "OK")
            self.assertEqual(answer["statuses"][0]["currentLimit"],
                             {"requestsPerUnit": 3, "unit": "MINUTE"})
            self.assertEqual(answer["statuses"][0].get("limitRemaining", 0), remaining)
        status, payload = http_request(address, "POST", "/json", body)
        self.assertEqual(status, 429)
        self.assertEqual(json.loads(payload)["overallCode"], "OVER_LIMIT")
        # The same counter as gRPC: the doors share one decision path.
        r = self.ask([[("remote_address", "http-1")]])
        self.assertEqual(r.overall_code, self.rls_pb2.RateLimitResponse.OVER_LIMIT)

    def test_http_errors(self):
        address = self.tallyd.fields["http"]
        status, payload = http_request(address, "POST", "/json", b"{not json")
        self.assertEqual(status, 400)
        self.assertIn("error", json.loads(payload))
        status, payload = http_request(address, "POST", "/json", b'{"domain": "edge"}')
        self.assertEqual(status, 400)
        self.assertIn("descriptor", json.loads(payload)["error"])
        self.assertEqual(http_request(address, "GET", "/json")[0], 405)
        self.assertEqual(http_request(address, "GET", "/nope")[0], 404)
        status, _ = http_request(address, "POST", "/json", b"x" * (70 * 1024))
        self.assertEqual(status, 413)
        status, _ = http_request(address, "GET", "/healthcheck",
                                 headers={"X-Big": "y" * 10000})
        self.assertEqual(status, 431)
        # A client that sends half a request and stalls is not answered,
        # but the server keeps serving others.
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as stalled:
            stalled.sendall(b"POST /json HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
            self.assertEqual(http_request(address, "GET", "/healthcheck")[0], 200)


class HeadersTest(unittest.TestCase):
    """--rls-headers: draft-IETF RateLimit-* headers on both doors."""

    @classmethod
    def setUpClass(cls):
        import grpc
        cls.rls_pb2 = GEN[0]
        cls.dir = tempfile.mkdtemp(prefix="tally-rls-headers-")
        rules = os.path.join(cls.dir, "rules.yaml")
        with open(rules, "w") as f:
            f.write(RULES % 5)
        cls.tallyd = Tallyd(cls.dir, ["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
                                      "--rules", rules, "--rls-headers"])
        cls.channel = grpc.insecure_channel(cls.tallyd.fields["grpc"])
        cls.call = cls.channel.unary_unary(
            "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
            request_serializer=cls.rls_pb2.RateLimitRequest.SerializeToString,
            response_deserializer=cls.rls_pb2.RateLimitResponse.FromString)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        rc = cls.tallyd.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)
        assert rc == 0, "tallyd exited with %s" % rc

    def ask(self, *descriptors):
        request = self.rls_pb2.RateLimitRequest(domain="edge")
        for entries in descriptors:
            d = request.descriptors.add()
            for k, v in entries:
                d.entries.add(key=k, value=v)
        r = self.call(request, timeout=10)
        return r, [(h.key, h.value) for h in r.response_headers_to_add]

    def test_grpc_headers_follow_the_descriptor_nearest_its_limit(self):
        R = self.rls_pb2.RateLimitResponse
        for remaining in (2, 1, 0):
            r, headers = self.ask([("remote_address", "h-1")])
            self.assertEqual(r.overall_code, R.OK)
            self.assertEqual([k for k, _ in headers],
                             ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"])
            self.assertEqual(headers[0][1], "3")
            self.assertEqual(headers[1][1], str(remaining))
            self.assertTrue(1 <= int(headers[2][1]) <= MINUTE_RESET_BOUND_S, headers)
        r, headers = self.ask([("remote_address", "h-1")])
        self.assertEqual(r.overall_code, R.OVER_LIMIT)
        self.assertEqual(dict(headers)["RateLimit-Remaining"], "0")
        self.assertTrue(1 <= int(dict(headers)["RateLimit-Reset"]) <= MINUTE_RESET_BOUND_S, headers)
        # Two descriptors: the one nearer its limit (team-*: 2 per minute, 1
        # left after this call) beats remote_address (3 per minute, 2 left).
        r, headers = self.ask([("remote_address", "h-2")], [("api", "v1"), ("user", "team-h")])
        self.assertEqual(r.overall_code, R.OK)
        self.assertEqual(dict(headers)["RateLimit-Limit"], "2")
        self.assertEqual(dict(headers)["RateLimit-Remaining"], "1")
        # Nothing limited (no rule, or unlimited): no headers.
        _, headers = self.ask([("nothing", "here")], [("path", "/free")])
        self.assertEqual(headers, [])

    def test_http_json_carries_the_same_headers(self):
        address = self.tallyd.fields["http"]
        body = json.dumps({"domain": "edge", "descriptors": [
            {"entries": [{"key": "remote_address", "value": "h-http"}]}]}).encode()
        for remaining in (2, 1, 0):
            status, fields, payload = http_exchange(address, "POST", "/json", body)
            self.assertEqual(status, 200, payload)
            self.assertEqual(fields.get("ratelimit-limit"), "3", fields)
            self.assertEqual(fields.get("ratelimit-remaining"), str(remaining), fields)
            self.assertTrue(1 <= int(fields["ratelimit-reset"]) <= MINUTE_RESET_BOUND_S, fields)
        status, fields, _ = http_exchange(address, "POST", "/json", body)
        self.assertEqual(status, 429)
        self.assertEqual(fields.get("ratelimit-remaining"), "0", fields)
        # Errors and the health check carry none.
        status, fields, _ = http_exchange(address, "POST", "/json", b"{bad")
        self.assertEqual(status, 400)
        self.assertNotIn("ratelimit-limit", fields)
        status, fields, _ = http_exchange(address, "GET", "/healthcheck")
        self.assertEqual(status, 200)
        self.assertNotIn("ratelimit-limit", fields)


class GlobalShadowTest(unittest.TestCase):
    """--shadow-mode: every limit decided and counted, every answer OK."""

    def test_every_limit_is_in_shadow_mode(self):
        import grpc
        rls_pb2, _, _ = GEN
        workdir = tempfile.mkdtemp(prefix="tally-rls-shadow-")
        rules = os.path.join(workdir, "rules.yaml")
        with open(rules, "w") as f:
            f.write(RULES % 5)
        tallyd = Tallyd(workdir, ["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
                                  "--rules", rules, "--shadow-mode"])
        try:
            channel = grpc.insecure_channel(tallyd.fields["grpc"])
            call = channel.unary_unary(
                "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
                request_serializer=rls_pb2.RateLimitRequest.SerializeToString,
                response_deserializer=rls_pb2.RateLimitResponse.FromString)
            R = rls_pb2.RateLimitResponse
            remaining = []
            for _ in range(5):
                req = rls_pb2.RateLimitRequest(domain="edge")
                req.descriptors.add().entries.add(key="remote_address", value="shadowed")
                r = call(req, timeout=10)
                self.assertEqual(r.overall_code, R.OK)
                self.assertEqual(r.statuses[0].code, R.OK)
                remaining.append(r.statuses[0].limit_remaining)
            # Counted as usual (3 per minute): the last two would have been denied.
            self.assertEqual(remaining, [2, 1, 0, 0, 0])
            _, body = http_request(tallyd.fields["http"], "GET", "/metrics")
            shadow = sum(int(v) for v in re.findall(
                rb'tally_rule_shadow_mode_hits_total\{rule="edge\.remote_address"[^}]*\} (\d+)', body))
            self.assertEqual(shadow, 2, body)
            channel.close()
        finally:
            self.assertEqual(tallyd.stop(), 0)
            shutil.rmtree(workdir, ignore_errors=True)


class ClusterTest(unittest.TestCase):
    """Three members: a descriptor asked through different members shares one limit."""

    def test_three_members_share_the_limit(self):
        import grpc
        rls_pb2, rls_pb2_grpc, _ = GEN
        workdir = tempfile.mkdtemp(prefix="tally-rls-cluster-")
        rules = os.path.join(workdir, "rules.yaml")
        with open(rules, "w") as f:
            f.write(RULES % 10)
        nodes = []
        try:
            first = Tallyd(workdir, ["--gossip", "127.0.0.1:0", "--node-id", "n1",
                                     "--grpc", "127.0.0.1:0", "--rules", rules])
            nodes.append(first)
            for name in ("n2", "n3"):
                nodes.append(Tallyd(workdir, ["--gossip", "127.0.0.1:0", "--node-id", name,
                                              "--join", first.fields["gossip"],
                                              "--grpc", "127.0.0.1:0", "--rules", rules]))
            channels = [grpc.insecure_channel(n.fields["grpc"]) for n in nodes]
            calls = [c.unary_unary(
                "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
                request_serializer=rls_pb2.RateLimitRequest.SerializeToString,
                response_deserializer=rls_pb2.RateLimitResponse.FromString) for c in channels]

            def ask(i, value):
                req = rls_pb2.RateLimitRequest(domain="edge")
                d = req.descriptors.add()
                d.entries.add(key="reload", value=value)
                return calls[i % 3](req, timeout=10)

            R = rls_pb2.RateLimitResponse
            # Membership converges within seconds; until then members may
            # decide alone. A fresh probe key per attempt, asked through each
            # member in turn, shows when all three share one counter.
            def shared(attempt=[0]):
                attempt[0] += 1
                key = "probe-%d" % attempt[0]
                rem = [ask(i, key).statuses[0].limit_remaining for i in range(3)]
                return rem == [9, 8, 7]
            wait_for(shared, "a shared counter across members", seconds=30)
            codes = [ask(i, "shared").overall_code for i in range(15)]
            self.assertEqual(codes.count(R.OK), 10)
            self.assertEqual(codes[10:], [R.OVER_LIMIT] * 5)

            # Several descriptors in one request, their counters owned by
            # different members (six keys on three members: rendezvous
            # hashing of these fixed names spreads them), asked through each
            # member in turn: every owner decides its own keys exactly.
            def ask_many(i, descriptors):
                req = rls_pb2.RateLimitRequest(domain="edge")
                for key, value in descriptors:
                    req.descriptors.add().entries.add(key=key, value=value)
                return calls[i % 3](req, timeout=10)
            many = [("reload", "multi-%d" % k) for k in range(6)]
            for i in range(12):
                r = ask_many(i, many)
                want = R.OK if i < 10 else R.OVER_LIMIT
                self.assertEqual(r.overall_code, want, i)
                self.assertEqual([s.code for s in r.statuses], [want] * 6, i)
                self.assertEqual([s.limit_remaining for s in r.statuses],
                                 [max(0, 9 - i)] * 6, i)
            # One descriptor over its limit: the request is OVER_LIMIT, and
            # the other keeps the hits it admitted (docs/ENVOY.md, "Decisions").
            mixed = [("remote_address", "mixed"), ("reload", "mixed")]
            for i in range(5):
                r = ask_many(i, mixed)
                self.assertEqual(r.overall_code, R.OK if i < 3 else R.OVER_LIMIT, i)
                self.assertEqual(r.statuses[1].code, R.OK, i)
                self.assertEqual(r.statuses[1].limit_remaining, 9 - i, i)
            for c in channels:
                c.close()
        finally:
            for n in nodes:
                n.stop()
            shutil.rmtree(workdir, ignore_errors=True)


def main():
    global TALLYD, PROTO_DIR, GEN
    TALLYD, PROTO_DIR = sys.argv[1], sys.argv[2]
    stubs = tempfile.mkdtemp(prefix="tally-rls-stubs-")
    try:
        GEN = generate_stubs(stubs)
        result = unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[3:], exit=False).result
    finally:
        shutil.rmtree(stubs, ignore_errors=True)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
