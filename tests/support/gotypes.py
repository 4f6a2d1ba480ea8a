"""Go types (amd64 layouts) shared by the unit tests of values, stubs and ABIs."""
from blade_go.inspector.gotypes import GoType, Kind, basic

INT = basic("int", Kind.INT, 8)
I8 = basic("int8", Kind.INT, 1)
U8 = basic("uint8", Kind.UINT, 1)
U16 = basic("uint16", Kind.UINT, 2)
U64 = basic("uint64", Kind.UINT, 8)
I32 = basic("int32", Kind.INT, 4)
F32 = basic("main.Celsius", Kind.FLOAT32, 4)  # a named float32
F64 = basic("float64", Kind.FLOAT64, 8)
C64 = basic("complex64", Kind.COMPLEX64, 8, 4)
C128 = basic("complex128", Kind.COMPLEX128, 16, 8)
BOOL = basic("bool", Kind.BOOL, 1)
STR = basic("string", Kind.STRING, 16, 8)
ERR = GoType("error", Kind.IFACE, 16, 8)
