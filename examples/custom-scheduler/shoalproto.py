"""shoalproto — shoal's protobuf messages for Python, built at run time from proto/*.proto.

shoal's only contract between processes is proto/*.proto. A client in another language should
compile those files, not copy message definitions, so this module never keeps generated code in
the repository. At start it builds the three modules a scheduler needs (bus, store, objects):

  * with `protoc` (Debian package protobuf-compiler): `protoc --python_out` into a private
    temporary directory, then imports bus_pb2, store_pb2 and objects_pb2 from there;
  * without it, with `protoc-c` (Debian package protobuf-c-compiler, which shoal's build needs
    anyway): it writes a FileDescriptorSet (`-o`) and python3-protobuf makes the message classes
    from the descriptors.

Either way the caller gets three module-like objects with the same shape as protoc's output:
message classes as attributes (store.TxnRequest), nested enums on their class
(store.Compare.MOD, objects.NodeStatus.READY) and top-level enum values on the module
(objects.PENDING). The temporary directory is removed when the process exits.
"""

import atexit
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import types

PROTO_FILES = ("bus.proto", "store.proto", "objects.proto")


class ProtoError(RuntimeError):
    """The .proto files could not be compiled; the message says why and what to install."""


def default_proto_dir():
    """proto/ of the shoal tree this file lives in (examples/custom-scheduler/../../proto)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "proto"))


def _run(argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as e:
        raise ProtoError(f"cannot run {argv[0]}: {e}") from e
    if done.returncode != 0:
        raise ProtoError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def _with_protoc(protoc, proto_dir, out_dir):
    files = [os.path.join(proto_dir, f) for f in PROTO_FILES]
    _run([protoc, f"-I{proto_dir}", f"--python_out={out_dir}", *files])
    sys.path.insert(0, out_dir)
    try:
        mods = [importlib.import_module(f[: -len(".proto")] + "_pb2") for f in PROTO_FILES]
    finally:
        sys.path.remove(out_dir)
    return mods


def _namespace(file_desc, classes):
    """A module-like object shaped like protoc's <file>_pb2 for one file descriptor."""
    from google.protobuf.internal import enum_type_wrapper

    ns = types.SimpleNamespace(DESCRIPTOR=file_desc)
    for name, md in file_desc.message_types_by_name.items():
        setattr(ns, name, classes[md.full_name])
    for name, ed in file_desc.enum_types_by_name.items():
        setattr(ns, name, enum_type_wrapper.EnumTypeWrapper(ed))
        for v in ed.values:
            setattr(ns, v.name, v.number)
    return ns


def _with_descriptor_set(protoc_c, proto_dir, out_dir):
    from google.protobuf import descriptor_pb2, message_factory

    set_path = os.path.join(out_dir, "shoal.pb")
    files = [os.path.join(proto_dir, f) for f in PROTO_FILES]
    _run([protoc_c, f"-I{proto_dir}", "--include_imports", f"--descriptor_set_out={set_path}",
          *files])
    fds = descriptor_pb2.FileDescriptorSet()
    with open(set_path, "rb") as f:
        fds.ParseFromString(f.read())
    classes = message_factory.GetMessages(list(fds.file))
    by_file = {}
    for cls in classes.values():
        by_file.setdefault(cls.DESCRIPTOR.file.name, cls.DESCRIPTOR.file)
    missing = [f for f in PROTO_FILES if f not in by_file]
    if missing:
        raise ProtoError(f"{protoc_c} produced no descriptors for {', '.join(missing)}")
    return [_namespace(by_file[f], classes) for f in PROTO_FILES]


def load(proto_dir=None):
    """Returns (bus, store, objects), compiled from proto_dir (default: the tree's proto/)."""
    proto_dir = proto_dir or default_proto_dir()
    for f in PROTO_FILES:
        if not os.path.isfile(os.path.join(proto_dir, f)):
            raise ProtoError(f"{os.path.join(proto_dir, f)} not found (use --proto-dir)")
    out_dir = tempfile.mkdtemp(prefix="shoal-proto-")
    atexit.register(shutil.rmtree, out_dir, True)
    protoc = shutil.which("protoc")
    if protoc:
        return tuple(_with_protoc(protoc, proto_dir, out_dir))
    protoc_c = shutil.which("protoc-c")
    if protoc_c:
        return tuple(_with_descriptor_set(protoc_c, proto_dir, out_dir))
    raise ProtoError("neither protoc nor protoc-c found: apt-get install protobuf-compiler")
