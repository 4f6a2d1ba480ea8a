"""chaosblade's Response: {"code", "success", "error" (failures only), "result" (when not nil)}.

Every CLI command writes exactly one of these on stdout; blade treats anything else as error 60000.
`result` of a create is always the uid. Warnings travel in their own field, "warnings" (a list);
blade keeps only code/success/error/result, and for a successful create it stores `error` in its
record (shown by `blade status <uid>`), so under blade the warnings are also joined into `error`.
"""
import json
import sys

from .errors import Code


def ok(result=None, warnings=None, under_blade=False) -> dict:
    resp = {"code": Code.OK, "success": True}
    if warnings and under_blade:
        resp["error"] = "warning: " + "; warning: ".join(map(str, warnings))
    if result is not None:  # like Go's omitempty on an interface: only nil is left out
        resp["result"] = result
    if warnings:
        resp["warnings"] = [str(w) for w in warnings]
    return resp


def fail(code: int, error: str, result=None) -> dict:
    resp = {"code": int(code), "success": False, "error": str(error)}
    if result is not None:
        resp["result"] = result
    return resp


def exit_status(resp: dict) -> int:
    return 0 if resp.get("success") else 1


def emit(resp: dict, stream=None) -> int:
    """Write resp as one JSON line; returns the process exit status (0 success, 1 failure)."""
    stream = stream or sys.stdout
    try:
        text = json.dumps(resp, default=str, sort_keys=False)
    except (TypeError, ValueError) as e:  # only reachable through a programming error
        text = json.dumps(fail(Code.RESULT_MARSHAL_FAILED, f"cannot encode the response: {e}"))
        resp = {"success": False}
    stream.write(text + "\n")
    stream.flush()
    return exit_status(resp)
