"""Protocol factories: what ``listen_*``/``connect_*`` accept, checked at the call.

A stream API takes a Twisted-style factory (``build_protocol(addr)``, and
optionally ``do_start()``/``do_stop()``) or any zero-argument callable that
returns a protocol, such as a Protocol class. A datagram API takes one
protocol instance. Passing the other kind is a common slip, and without a
check it would fail later, on every connection, far from the mistake.
"""

from __future__ import annotations

from typing import Any

from reactor.interfaces import Address, FactoryArg, ProtocolInterface, ReactorPort

__all__ = ["build_protocol", "check_datagram_protocol", "check_factory", "factory_hook"]


def check_factory(factory: object, what: str) -> FactoryArg:
    """``factory`` if it can build protocols; TypeError saying what to pass otherwise."""
    if callable(getattr(factory, "build_protocol", None)) or callable(factory):
        return factory  # type: ignore[return-value]
    if hasattr(factory, "data_received") or hasattr(factory, "connection_made"):
        name = type(factory).__name__
        raise TypeError(
            f"{what}() got a protocol instance ({name}()); it makes one protocol per "
            f"connection, so pass the class ({name}) or a factory, not an instance"
        )
    raise TypeError(
        f"{what}() needs a protocol class, a zero-argument callable returning a protocol, "
        f"or a factory with build_protocol(addr); got {factory!r}"
    )


def check_datagram_protocol(protocol: object, what: str) -> Any:
    """``protocol`` if it is a datagram protocol instance; TypeError otherwise."""
    if isinstance(protocol, type):
        raise TypeError(
            f"{what}() takes a protocol instance (one endpoint, one protocol): "
            f"pass {protocol.__name__}(), not the class {protocol.__name__}"
        )
    if not callable(getattr(protocol, "datagram_received", None)):
        raise TypeError(
            f"{what}() needs a datagram protocol instance with "
            f"datagram_received(data, addr); got {protocol!r}"
        )
    return protocol


def build_protocol(factory: FactoryArg, addr: Address) -> ProtocolInterface | None:
    """Ask a Twisted-style factory (``build_protocol(addr)``) or call a plain callable."""
    build = getattr(factory, "build_protocol", None)
    protocol: ProtocolInterface | None = build(addr) if build is not None else factory()  # type: ignore[operator]
    return protocol


def factory_hook(factory: FactoryArg, name: str, reactor: ReactorPort) -> None:
    """Call the factory's optional ``do_start``/``do_stop``; an error is logged, not raised."""
    hook = getattr(factory, name, None)
    if hook is not None:
        try:
            hook()
        except Exception as exc:
            reactor.report_error(
                {"message": f"exception in {type(factory).__name__}.{name}()", "exception": exc}
            )
