"""
ringpress native core (private: use the ringpress package)
"""

from __future__ import annotations

import collections.abc
import typing

import typing_extensions

class Store:
    def add(self, arg0: str, arg1: typing.SupportsInt | typing.SupportsIndex) -> int: ...
    def delete_key(self, key: str) -> bool:
        """
        Removes key; True if it existed (like torch's Store.delete_key).
        """
    def get(
        self, key: str, timeout_ms: typing.SupportsInt | typing.SupportsIndex = 300000
    ) -> bytes: ...
    def set(self, arg0: str, arg1: bytes) -> None: ...

class HashStore(Store):
    def __init__(self) -> None: ...

class TCPStore(Store):
    def __init__(
        self,
        host: str,
        port: typing.SupportsInt | typing.SupportsIndex,
        timeout_ms: typing.SupportsInt | typing.SupportsIndex = 300000,
        *,
        key: typing.Any = None,
    ) -> None: ...

class TCPStoreServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: typing.SupportsInt | typing.SupportsIndex = 0,
        *,
        key: typing.Any = None,
        max_connections: typing.SupportsInt | typing.SupportsIndex = 1024,
        max_value_bytes: typing.SupportsInt | typing.SupportsIndex = 67108864,
        max_total_bytes: typing.SupportsInt | typing.SupportsIndex = 268435456,
        request_timeout: typing.SupportsFloat | typing.SupportsIndex = 30.0,
        handshake_timeout: typing.SupportsFloat | typing.SupportsIndex = 5.0,
        max_pending: typing.SupportsInt | typing.SupportsIndex = 64,
    ) -> None: ...
    @property
    def connections(self) -> int: ...
    @property
    def held_bytes(self) -> int: ...
    @property
    def port(self) -> int: ...

class Work:
    def is_completed(self) -> bool: ...
    def on_complete(self, arg0: collections.abc.Callable) -> None: ...
    def wait(self, timeout: typing.SupportsFloat | typing.SupportsIndex = -1.0) -> bool: ...
    @property
    def name(self) -> str: ...
    @property
    def seq(self) -> int: ...

class Communicator:
    @staticmethod
    def join(
        store: typing.Any,
        transport: str = "",
        timeout: typing.SupportsFloat | typing.SupportsIndex = 0.0,
        bind_addr: str = "",
        route_hint: str = "",
        secret: str = "",
        encrypt: str = "",
    ) -> Communicator: ...
    def __init__(
        self,
        store: typing.Any,
        rank: typing.SupportsInt | typing.SupportsIndex,
        size: typing.SupportsInt | typing.SupportsIndex,
        transport: str = "",
        timeout: typing.SupportsFloat | typing.SupportsIndex = 0.0,
        bind_addr: str = "",
        route_hint: str = "",
        secret: str = "",
        timeline: str = "",
        segment_bytes: typing.SupportsInt | typing.SupportsIndex = 0,
        small_bytes: typing.SupportsInt | typing.SupportsIndex = 0,
        shm_ring_bytes: typing.SupportsInt | typing.SupportsIndex = 0,
        spin_us: typing.SupportsInt | typing.SupportsIndex = -1,
        encrypt: str = "",
        halving_bytes: typing.SupportsInt | typing.SupportsIndex = 0,
    ) -> None: ...
    def allgather(
        self,
        arg0: typing.SupportsInt | typing.SupportsIndex,
        arg1: typing.SupportsInt | typing.SupportsIndex,
        arg2: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
        arg3: str,
        arg4: bool,
    ) -> Work: ...
    def allgather_buffer(self, arg0: typing.Any, arg1: typing.Any) -> bool: ...
    def allreduce(
        self,
        ptr: typing.SupportsInt | typing.SupportsIndex,
        count: typing.SupportsInt | typing.SupportsIndex,
        dtype: str,
        op: str,
        async_op: bool,
        compression: str = "none",
        codec: str = "zstd",
        level: typing.SupportsInt | typing.SupportsIndex = 1,
        block: typing.SupportsInt | typing.SupportsIndex = 512,
        ratio: typing.SupportsFloat | typing.SupportsIndex = 0.01,
        sampled: bool = True,
        residual: typing.SupportsInt | typing.SupportsIndex = 0,
        allow: collections.abc.Sequence[str] = ["lossless"],
        tolerance: typing.SupportsFloat | typing.SupportsIndex = 0.05,
        stochastic: bool = False,
        threshold: typing.SupportsFloat | typing.SupportsIndex = 0.0,
        values: str = "fp32",
    ) -> Work: ...
    def allreduce_buffer(self, arg0: typing.Any, arg1: typing.Any) -> bool: ...
    def allreduce_coalesced(
        self,
        arg0: collections.abc.Sequence[
            tuple[
                typing.SupportsInt | typing.SupportsIndex, typing.SupportsInt | typing.SupportsIndex
            ]
        ],
        arg1: str,
        arg2: str,
        arg3: bool,
    ) -> Work: ...
    def allreduce_plain(
        self,
        arg0: typing.SupportsInt | typing.SupportsIndex,
        arg1: typing.SupportsInt | typing.SupportsIndex,
        arg2: str,
        arg3: str,
        arg4: bool,
    ) -> typing.Any: ...
    def alltoall(
        self,
        arg0: typing.SupportsInt | typing.SupportsIndex,
        arg1: typing.SupportsInt | typing.SupportsIndex,
        arg2: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
        arg3: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
        arg4: str,
        arg5: bool,
    ) -> Work: ...
    def barrier(self, arg0: bool) -> typing.Any: ...
    def broadcast(
        self,
        arg0: typing.SupportsInt | typing.SupportsIndex,
        arg1: typing.SupportsInt | typing.SupportsIndex,
        arg2: str,
        arg3: typing.SupportsInt | typing.SupportsIndex,
        arg4: bool,
    ) -> Work: ...
    def close(self) -> None: ...
    def enable_timeline(self, arg0: bool) -> None: ...
    def grow(self) -> tuple: ...
    def hosts(self) -> list[int]: ...
    def reduce_scatter(
        self,
        arg0: typing.SupportsInt | typing.SupportsIndex,
        arg1: typing.SupportsInt | typing.SupportsIndex,
        arg2: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
        arg3: str,
        arg4: str,
        arg5: bool,
    ) -> Work: ...
    def reduce_scatter_buffer(
        self, arg0: typing.Any, arg1: typing.Any, arg2: typing.Any
    ) -> bool: ...
    def set_timeout(self, timeout: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    def shrink(self) -> tuple: ...
    def stats(self) -> dict: ...
    def transport(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> str: ...
    def write_timeline(self, arg0: str) -> int: ...
    @property
    def broken(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def epoch(self) -> int: ...
    @property
    def joined(self) -> list[int]: ...
    @property
    def rank(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def timeout(self) -> float: ...

class Buffer:
    """
    bytes-like result backed by a pooled allocation
    """
    def __bytes__(self: typing_extensions.Buffer) -> bytes: ...
    def __len__(self: typing_extensions.Buffer) -> int: ...

def bit_shuffle(
    src: typing.Any,
    dst: typing.Any,
    elemsize: typing.SupportsInt | typing.SupportsIndex,
    level: str | None = None,
) -> None: ...
def bit_unshuffle(
    src: typing.Any,
    dst: typing.Any,
    elemsize: typing.SupportsInt | typing.SupportsIndex,
    level: str | None = None,
) -> None: ...
def buffer_info(obj: typing.Any, writable: bool) -> tuple:
    """
    (address, count, dtype, shape) of a C-contiguous buffer, or () if it is not one
    """

def buffer_pool_clear() -> None: ...
def buffer_pool_stats() -> dict: ...
def build_info() -> dict: ...
def byte_shuffle(
    src: typing.Any,
    dst: typing.Any,
    elemsize: typing.SupportsInt | typing.SupportsIndex,
    level: str | None = None,
) -> None: ...
def byte_unshuffle(
    src: typing.Any,
    dst: typing.Any,
    elemsize: typing.SupportsInt | typing.SupportsIndex,
    level: str | None = None,
) -> None: ...
def codecs() -> list: ...
def compress_bound(
    nbytes: typing.SupportsInt | typing.SupportsIndex,
    ndim: typing.SupportsInt | typing.SupportsIndex,
    block_size: typing.SupportsInt | typing.SupportsIndex,
) -> int: ...
def compressor_decode(
    payload: typing.Any,
    out: typing.Any,
    threads: typing.SupportsInt | typing.SupportsIndex,
    max_elements: typing.SupportsInt | typing.SupportsIndex = 0,
) -> typing.Any: ...
def compressor_encode(
    x: typing.Any,
    shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
    codec: str,
    block: typing.SupportsInt | typing.SupportsIndex = 512,
    ratio: typing.SupportsFloat | typing.SupportsIndex = 0.01,
    sampled: bool = True,
    tolerance: typing.SupportsFloat | typing.SupportsIndex = 0.05,
    stochastic: bool = False,
    threshold: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    values: str = "fp32",
    lossless: str = "none",
    level: typing.SupportsInt | typing.SupportsIndex = 1,
    shuffle: str = "auto",
    seed: typing.SupportsInt | typing.SupportsIndex = 0,
    residual: typing.Any = None,
    threads: typing.SupportsInt | typing.SupportsIndex = 1,
) -> typing.Any: ...
def container_info(payload: typing.Any) -> dict: ...
def container_payload(
    payload: typing.Any, threads: typing.SupportsInt | typing.SupportsIndex = 1
) -> bytes: ...
def cuda_blockwise_decode_host_staged(
    payload: typing.Any,
    scales: typing.Any,
    out: typing.Any,
    bits: typing.SupportsInt | typing.SupportsIndex,
    block: typing.SupportsInt | typing.SupportsIndex,
) -> None: ...
def cuda_blockwise_encode_host_staged(
    x: typing.Any,
    payload: typing.Any,
    scales: typing.Any,
    bits: typing.SupportsInt | typing.SupportsIndex,
    block: typing.SupportsInt | typing.SupportsIndex,
    stochastic: bool = False,
    seed: typing.SupportsInt | typing.SupportsIndex = 0,
    offset: typing.SupportsInt | typing.SupportsIndex = 0,
) -> None: ...
def cuda_byte_shuffle_host_staged(
    src: typing.Any,
    dst: typing.Any,
    elemsize: typing.SupportsInt | typing.SupportsIndex,
    unshuffle: bool = False,
) -> None: ...
def cuda_sign_decode_host_staged(
    payload: typing.Any,
    scales: typing.Any,
    out: typing.Any,
    block: typing.SupportsInt | typing.SupportsIndex,
) -> None: ...
def cuda_sign_encode_host_staged(
    x: typing.Any,
    payload: typing.Any,
    scales: typing.Any,
    block: typing.SupportsInt | typing.SupportsIndex,
) -> None: ...
def cuda_ternary_decode_host_staged(
    payload: typing.Any,
    scales: typing.Any,
    out: typing.Any,
    block: typing.SupportsInt | typing.SupportsIndex,
) -> None: ...
def cuda_ternary_encode_host_staged(
    x: typing.Any,
    payload: typing.Any,
    scales: typing.Any,
    block: typing.SupportsInt | typing.SupportsIndex,
    seed: typing.SupportsInt | typing.SupportsIndex = 0,
    offset: typing.SupportsInt | typing.SupportsIndex = 0,
) -> None: ...
def env_raw(name: str) -> str | None: ...
def env_seconds(name: str) -> float: ...
def env_string(name: str) -> str: ...
def env_table() -> list: ...
def frame_header(buf: typing.Any) -> dict: ...
def frame_info(buf: typing.Any) -> dict: ...
def frame_size(buf: typing.Any) -> int: ...
def host_identity() -> str: ...
def lossless_compress(
    x: typing.Any,
    dtype: str,
    shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
    codec: str,
    level: typing.SupportsInt | typing.SupportsIndex,
    shuffle: str,
    threads: typing.SupportsInt | typing.SupportsIndex,
    block_size: typing.SupportsInt | typing.SupportsIndex,
    out: typing.Any,
) -> typing.Any: ...
def lossless_decompress(
    buf: typing.Any, out: typing.Any, threads: typing.SupportsInt | typing.SupportsIndex
) -> typing.Any: ...
def prefix_store(arg0: str, arg1: typing.Any) -> Store: ...
def rendezvous_records(rank: typing.SupportsInt | typing.SupportsIndex) -> list[str]:
    """
    The store keys a communicator's rendezvous writes for rank (relative to its prefix).
    """

def simd_levels_supported() -> list: ...
def wire_decode(
    name: str,
    payload: bytes,
    count: typing.SupportsInt | typing.SupportsIndex,
    dtype: str = "float32",
    op: str = "sum",
    block: typing.SupportsInt | typing.SupportsIndex = 512,
    ratio: typing.SupportsFloat | typing.SupportsIndex = 0.01,
    sampled: bool = True,
    codec: str = "zstd",
    level: typing.SupportsInt | typing.SupportsIndex = 1,
    tolerance: typing.SupportsFloat | typing.SupportsIndex = 0.05,
    stochastic: bool = False,
    threshold: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    values: str = "fp32",
) -> bytes: ...
def wire_encode(
    name: str,
    data: typing_extensions.Buffer,
    dtype: str = "float32",
    op: str = "sum",
    block: typing.SupportsInt | typing.SupportsIndex = 512,
    ratio: typing.SupportsFloat | typing.SupportsIndex = 0.01,
    sampled: bool = True,
    codec: str = "zstd",
    level: typing.SupportsInt | typing.SupportsIndex = 1,
    tolerance: typing.SupportsFloat | typing.SupportsIndex = 0.05,
    stochastic: bool = False,
    threshold: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    values: str = "fp32",
    seed: typing.SupportsInt | typing.SupportsIndex = 0,
) -> bytes: ...

__version__: str = "0.1.0"
