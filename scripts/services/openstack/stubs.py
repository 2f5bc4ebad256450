"""Read-only stand-ins for the two services the test OpenStack does not run, so Nova works without them.

* network (Neutron API subset, :9696): Nova reads ports, networks and security groups even for servers booted
  with ``networks="none"``; every list is empty.
* image (Glance v2 API subset, :9292): one public, active image ``STUB_IMAGE_ID`` ("csbs-stub-image"), so servers
  can boot without volumes. The fake virt driver never downloads it; Nova reads only its record and the schema.

Anything else is logged and answered 404. These are not Neutron or Glance.
Run: python stubs.py 127.0.0.1 9696 9292
"""

import json
import re
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

STUB_IMAGE_ID = "5a0bd4f1-57ad-4d5a-a2d3-1f0c0b6c0e11"
NETWORK_LISTS = re.compile(r"^/(v2\.0/)?(ports|security-groups|networks|subnets|floatingips|extensions|"
                           r"security-group-rules|trunks|qos/policies)(\.json)?$")
IMAGE = {
    "id": STUB_IMAGE_ID, "name": "csbs-stub-image", "status": "active", "visibility": "public",
    "container_format": "bare", "disk_format": "raw", "min_disk": 0, "min_ram": 0, "size": 1048576,
    "virtual_size": 1048576, "checksum": "b6d81b360a5672d80c27430f39153e2c", "os_hash_algo": "sha512",
    "os_hash_value": "0" * 128, "protected": False, "os_hidden": False, "tags": [], "owner": None,
    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    "self": f"/v2/images/{STUB_IMAGE_ID}", "file": f"/v2/images/{STUB_IMAGE_ID}/file", "schema": "/v2/schemas/image",
}
IMAGE_SCHEMA = {"name": "image", "additionalProperties": {"type": "string"},
                "properties": {k: {} for k in IMAGE}, "links": []}


def _reply(start, code, body):
    data = json.dumps(body).encode()
    start(code, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _unhandled(env, start, who):
    sys.stderr.write(f"{who}-stub: unhandled {env['REQUEST_METHOD']} {env.get('PATH_INFO')}?"
                     f"{env.get('QUERY_STRING', '')}\n")
    return _reply(start, "404 Not Found", {"error": {"message": "not served by the stub", "code": 404}})


def network_app(env, start):
    path, method = env.get("PATH_INFO", "/"), env["REQUEST_METHOD"]
    if method == "GET" and path in ("/", "/v2.0", "/v2.0/"):
        port = env.get("SERVER_PORT", "9696")
        return _reply(start, "200 OK", {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [
            {"rel": "self", "href": f"http://127.0.0.1:{port}/v2.0/"}]}]})
    m = NETWORK_LISTS.match(path)
    if method == "GET" and m:
        return _reply(start, "200 OK", {m.group(2).replace("-", "_").split("/")[-1]: []})
    return _unhandled(env, start, "network")


def image_app(env, start):
    path, method = env.get("PATH_INFO", "/").rstrip("/") or "/", env["REQUEST_METHOD"]
    port = env.get("SERVER_PORT", "9292")
    if method == "GET" and path in ("/", "/versions"):
        return _reply(start, "300 Multiple Choices" if path == "/" else "200 OK", {"versions": [
            {"id": "v2.16", "status": "CURRENT", "links": [{"rel": "self", "href": f"http://127.0.0.1:{port}/v2/"}]}]})
    if method == "GET" and path == "/v2/schemas/image":
        return _reply(start, "200 OK", IMAGE_SCHEMA)
    if method == "GET" and path == "/v2/images":
        return _reply(start, "200 OK", {"images": [IMAGE], "schema": "/v2/schemas/images", "first": "/v2/images"})
    if method == "GET" and path == f"/v2/images/{STUB_IMAGE_ID}":
        return _reply(start, "200 OK", IMAGE)
    return _unhandled(env, start, "image")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("stub: " + (fmt % args) + "\n")


if __name__ == "__main__":
    host, net_port, img_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    img = make_server(host, img_port, image_app, server_class=_Server, handler_class=_Quiet)
    threading.Thread(target=img.serve_forever, daemon=True).start()
    make_server(host, net_port, network_app, server_class=_Server, handler_class=_Quiet).serve_forever()
