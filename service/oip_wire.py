"""A gRPC request's counts, read off its wire bytes before protobuf parses them.

protobuf turns each element of a repeated field into an object of its own, and the smallest elements cost far
more parsed than sent: 19 MiB of empty ``inputs`` parsed into 893 MiB in 1.3 s (47 times), 59 MiB of empty
``bytes_contents`` (59 KiB gzipped) into 985 MiB in 1.6 s, on the worker's event loop, before any count was
checked (a helper's audit, 2026-12-07). ``refusal`` walks the wire format (protobuf's encoding: a key, then a
varint, 8 bytes, a length and that many bytes, or 4 bytes) as far as the protocol's own bounds allow and says
why a request is refused, or None; protobuf then parses only a request whose parsed form stays near its size.

What it counts, with the bounds HTTP's schema has (service/oip_schemas.py): a request's inputs, outputs and raw
contents (16 each), its parameters (64 a map), a shape's dimensions (256: the 8 allowed are checked once parsed,
where the message can say how many were sent, ``_check_sizes`` in service/oip_grpc.py); the values of typed
contents (NNSERVE_MAX_JSON_ITEMS, as a JSON body's items), of which at most MAX_WALKED may be sent one field each
(strings, and numbers not packed: protobuf 3 packs repeated numbers, as every client of the protocol does, into
one field counted at C speed); fields in all, 256 a message, but in typed contents. A request of another method
may hold 256 fields at most (their repeated fields are maps: one field an entry)."""

from __future__ import annotations

from collections.abc import Iterator

from service.oip_schemas import MAX_PARAMETERS, MAX_RANK, MAX_TENSORS

MAX_FIELDS = 256  # fields of a message (repeated ones each), but typed contents' values
MAX_WALKED = 4096  # typed contents' values sent one field each (strings; numbers not packed): the rows of a batch
_HIGH = bytes(range(128, 256))  # a varint's bytes but its last
_VARINTS = {1, 2, 3, 4, 5}  # bool, int, int64, uint, uint64 contents
_WIDTH = {6: 4, 7: 8}  # fp32, fp64 contents (packed: 4 or 8 bytes a value)


class Malformed(Exception):
    """Not the encoding of any message: protobuf's parser would refuse it too."""


class Refused(str):
    """What a request's bytes stand for when their counts are past the protocol's bounds: why."""


MALFORMED = Refused("the request is not a valid message of this method")  # what bytes no message's parse to


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
    raise Malformed


def _fields(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end of its value) of each field of the message in data[pos:end]."""
    while pos < end:
        key, pos = _varint(data, pos, end)
        wire = key & 7
        if wire == 0:
            stop = _varint(data, pos, end)[1]
        elif wire == 2:
            size, pos = _varint(data, pos, end)
            stop = pos + size
        elif wire in (1, 5):
            stop = pos + (8 if wire == 1 else 4)
        else:  # a group (no message of the protocol has one) or no wire type at all
            raise Malformed
        if stop > end:
            raise Malformed
        yield key >> 3, wire, pos, stop
        pos = stop


def _counted(data: bytes, pos: int, end: int, bounds: dict[int, tuple[int, str]]) -> Iterator[tuple[int, int, int]]:
    """The message's fields as (number, start, end) of those sent length-delimited, each bounded in number: the
    fields ``bounds`` names by theirs, the rest MAX_FIELDS together with them."""
    seen: dict[int, int] = {}
    for n, (number, wire, start, stop) in enumerate(_fields(data, pos, end)):
        if n >= MAX_FIELDS:
            raise ValueError(f"a message of the request holds more than {MAX_FIELDS} fields")
        seen[number] = seen.get(number, 0) + 1
        if number in bounds and seen[number] > bounds[number][0]:
            raise ValueError(bounds[number][1])
        if wire == 2:
            yield number, start, stop


def _last_bytes(data: bytes, start: int, stop: int) -> int:
    """The varints packed in data[start:stop]: their last bytes, the bytes under 128 (counted a MiB at a time)."""
    return sum(len(data[i : min(i + 2**20, stop)].translate(None, _HIGH)) for i in range(start, stop, 2**20))


def _values(data: bytes, pos: int, end: int, walked: list[int]) -> int:
    """The values of typed contents; ``walked`` counts those sent one field each, for the whole request."""
    values = 0
    for number, wire, start, stop in _fields(data, pos, end):
        if wire == 2 and number in _WIDTH:
            values += (stop - start) // _WIDTH[number]
        elif wire == 2 and number in _VARINTS:
            values += _last_bytes(data, start, stop)
        else:
            values += 1
            walked[0] += 1
            if walked[0] > MAX_WALKED:
                raise ValueError(
                    f"typed contents hold more than {MAX_WALKED} values sent one field each (strings, or numbers "
                    "not packed: protobuf 3 packs them), more than a request's rows; send numbers packed or raw"
                )
    return values


def refusal(data: bytes, method: str, max_values: int) -> str | None:
    """Why the request ``data`` of ``method`` is refused before it is parsed, or None; Malformed if it is no
    message at all."""
    try:
        if method != "ModelInfer":
            for _ in _counted(data, 0, len(data), {}):
                pass
            return None
        tensors = f"1-{MAX_TENSORS} inputs and at most {MAX_TENSORS} outputs per request"
        params = (MAX_PARAMETERS, f"at most {MAX_PARAMETERS} parameters per map")
        top = {4: params, 5: (MAX_TENSORS, tensors), 6: (MAX_TENSORS, tensors)}
        top[7] = (MAX_TENSORS, f"at most {MAX_TENSORS} raw_input_contents")
        values, walked = 0, [0]
        for number, start, stop in _counted(data, 0, len(data), top):
            if number == 6:
                for _ in _counted(data, start, stop, {2: params}):
                    pass
            elif number == 5:
                rank = f"an input has more than {MAX_FIELDS} dimensions; at most {MAX_RANK}"  # or said as sent
                for field, begin, end in _counted(data, start, stop, {3: (MAX_FIELDS, rank), 4: params}):
                    if field == 3 and (end - begin > 10 * MAX_FIELDS or _last_bytes(data, begin, end) > MAX_FIELDS):
                        raise ValueError(rank)  # packed: a dimension is 1 to 10 bytes
                    if field == 5:
                        values += _values(data, begin, end, walked)
                if values > max_values:
                    raise ValueError(f"the request's typed contents hold more than {max_values} values")
    except ValueError as e:
        return str(e)
    return None
