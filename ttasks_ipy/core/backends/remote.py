"""What a job that leaves the kernel's process carries there and back, the same for every backend that has one.

``pickle_runner`` is how a runner travels, ``reply_outcome`` what its reply
means; ``one_line`` and ``type_name`` are used on the worker side to describe
an error; ``remote_exception`` rebuilds it in the kernel: the original exception
when it can be unpickled here, else a ``RemoteError``, carrying the worker's
traceback text as ``remote_traceback`` either way.
"""
from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

from ..errors import SpecError

if TYPE_CHECKING:
    from ..spec import Runner


def one_line(e: BaseException) -> str:
    """``Type: message``, its first line only (the type alone for an empty message)."""
    text = f"{type(e).__name__}: {e}"
    return text.splitlines()[0] if text.strip() else type(e).__name__


def type_name(obj: Any) -> str:
    """The qualified name of ``obj``'s type (``ValueError``, ``pkg.mod.MyError``)."""
    t = type(obj)
    mod = t.__module__
    return t.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{t.__qualname__}"


def pickle_runner(runner: Runner, where: str) -> bytes:
    """``runner`` as bytes to send to ``where`` ('a worker process'); ``SpecError`` naming what cannot travel.

    A runner whose state is plain data (``Runner.plain_pickle``) goes through
    the standard ``pickle``, in C; any other through cloudpickle, which also
    sends functions and classes defined in the notebook, by value.
    """
    try:
        if runner.plain_pickle:
            return pickle.dumps(runner, protocol=5)
        import cloudpickle

        return cloudpickle.dumps(runner, protocol=5)
    except SpecError:
        raise
    except Exception as e:
        raise SpecError(f"the task cannot be sent to {where}: {one_line(e)}") from None


def reply_outcome(reply: dict[str, Any], where: str) -> Any:
    """The value a worker's ``done`` reply carries, or raise what its ``error`` or ``failed`` reply says.

    ``where`` names the worker for a value that cannot be loaded here ('the worker process').
    """
    import cloudpickle

    from ..errors import RemoteTraceback, ResultError

    op = reply["op"]
    if op == "done":
        try:
            return cloudpickle.loads(reply["value"])
        except Exception as e:
            raise ResultError(f"the result of {where} cannot be loaded here: {one_line(e)}") from None
    if op == "error":
        raise remote_exception(reply) from RemoteTraceback(reply.get("traceback") or "")
    if reply.get("stage") == "result":
        raise ResultError(reply["message"])
    raise SpecError(reply["message"])


def remote_exception(reply: dict[str, Any]) -> BaseException:
    """The exception an ``{"op": "error", ...}`` reply describes, with its ``remote_traceback``."""
    import cloudpickle

    from ..errors import RemoteError

    text = reply.get("traceback") or ""
    exc: Any = None
    data = reply.get("exception")
    if data is not None:
        try:
            exc = cloudpickle.loads(data)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        name = reply.get("type", "Exception")
        message = reply.get("message", "")
        exc = RemoteError(f"{name}: {message}" if message else name, name, text)
    else:
        try:
            exc.remote_traceback = text
        except (AttributeError, TypeError):
            pass
    return exc


__all__ = ["one_line", "pickle_runner", "remote_exception", "reply_outcome", "type_name"]
