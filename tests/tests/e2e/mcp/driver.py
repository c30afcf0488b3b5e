"""Drives `stagepass mcp` with the official MCP Python SDK (PyPI `mcp`), for tests/tests/mcp.rs.

Usage: python driver.py STEPS.json COMMAND [ARGS...]

Starts COMMAND as a stdio MCP server (with this process's environment), initializes a
session, runs each step in order and prints one JSON document: the server info and, per
step, {"ok": <result as JSON>} or {"error": {"code": N, "message": TEXT}}. An MCP error
on one step does not stop the run: the next step shows whether the server keeps serving.

Steps: {"op": "list_tools"} | {"op": "call", "name": N, "arguments": {...}}
     | {"op": "list_resources"} | {"op": "read", "uri": U}
     | {"op": "raw", "method": M, "params": {...}}   (a request the typed API would refuse)
"""

import json
import os
import sys

import anyio
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError


def dump(value):
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    return value


async def step(session, s):
    op = s["op"]
    if op == "list_tools":
        return await session.list_tools()
    if op == "call":
        return await session.call_tool(s["name"], s.get("arguments"))
    if op == "list_resources":
        return await session.list_resources()
    if op == "read":
        return await session.read_resource(s["uri"])
    if op == "raw":
        req = types.Request(method=s["method"], params=s.get("params"))
        return await session.send_request(req, types.EmptyResult)
    raise ValueError(f"unknown op {op!r}")


async def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        steps = json.load(f)
    params = StdioServerParameters(
        command=sys.argv[2], args=sys.argv[3:], env=dict(os.environ)
    )
    out = {"steps": []}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server"] = dump(init.server_info)
            for s in steps:
                try:
                    result = await step(session, s)
                    out["steps"].append({"ok": dump(result)})
                except MCPError as e:
                    out["steps"].append({"error": {"code": e.code, "message": e.message}})
    json.dump(out, sys.stdout)


anyio.run(main)
