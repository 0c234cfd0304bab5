/**
 * A minimal ONNX model writer: just enough of the ONNX protobuf schema to emit an inference graph
 * (nodes, float/int64 initialisers, tensor attributes, typed graph inputs/outputs).
 *
 * The protobuf wire format is written by hand (varints and length-delimited fields). Field numbers
 * follow the public ONNX specification (onnx.proto, IR version 8):
 *   ModelProto      ir_version=1 producer_name=2 producer_version=3 doc_string=6 graph=7 opset_import=8
 *                   metadata_props=14
 *   OperatorSetId   domain=1 version=2
 *   GraphProto      node=1 name=2 initializer=5 doc_string=10 input=11 output=12
 *   NodeProto       input=1 output=2 name=3 op_type=4 attribute=5
 *   AttributeProto  name=1 f=2 i=3 s=4 t=5 floats=7 ints=8 type=20
 *   TensorProto     dims=1 data_type=2 name=8 raw_data=9
 *   ValueInfoProto  name=1 type=2
 *   TypeProto       tensor_type=1;  TypeProto.Tensor elem_type=1 shape=2
 *   TensorShape     dim=1;  Dimension dim_value=1 dim_param=2
 *   StringString    key=1 value=2
 * onnx.proto is proto2, so repeated scalars are written unpacked (one tag per element).
 * Output is a pure function of the input: the same model always serialises to the same bytes.
 */

export const TensorDataType = { FLOAT: 1, INT64: 7 } as const;
export type TensorDataTypeId = (typeof TensorDataType)[keyof typeof TensorDataType];

export interface OnnxTensor {
  name: string;
  dims: number[];
  dataType: TensorDataTypeId;
  /** Little-endian element bytes (float32 or int64). */
  raw: Uint8Array;
}

export type OnnxAttributeValue =
  | { kind: 'float'; value: number }
  | { kind: 'int'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'floats'; value: number[] }
  | { kind: 'ints'; value: number[] }
  | { kind: 'tensor'; value: OnnxTensor };

export interface OnnxNode {
  opType: string;
  name: string;
  inputs: string[];
  outputs: string[];
  attributes?: Record<string, OnnxAttributeValue>;
}

export interface OnnxValueInfo {
  name: string;
  elemType: TensorDataTypeId;
  /** A number is a fixed dimension, a string a symbolic one (e.g. 'N' for the batch). */
  shape: Array<number | string>;
}

export interface OnnxGraph {
  name: string;
  nodes: OnnxNode[];
  initializers: OnnxTensor[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  docString?: string;
}

export interface OnnxModel {
  graph: OnnxGraph;
  opset?: number; // default 13
  irVersion?: number; // default 8
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  metadata?: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Tensor helpers

export function floatTensor(name: string, dims: number[], values: ArrayLike<number>): OnnxTensor {
  const count = dims.reduce((a, b) => a * b, 1);
  if (values.length !== count) throw new Error(`tensor ${name}: ${values.length} values for dims [${dims}]`);
  const f = values instanceof Float32Array ? values : Float32Array.from(values);
  // Copy into a fresh little-endian buffer (explicit DataView keeps it endian-independent).
  const raw = new Uint8Array(count * 4);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < count; i++) view.setFloat32(i * 4, f[i], true);
  return { name, dims: [...dims], dataType: TensorDataType.FLOAT, raw };
}

export function int64Tensor(name: string, dims: number[], values: ArrayLike<number>): OnnxTensor {
  const count = dims.reduce((a, b) => a * b, 1);
  if (values.length !== count) throw new Error(`tensor ${name}: ${values.length} values for dims [${dims}]`);
  const raw = new Uint8Array(count * 8);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < count; i++) view.setBigInt64(i * 8, BigInt(values[i]), true);
  return { name, dims: [...dims], dataType: TensorDataType.INT64, raw };
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire format

const WIRE_VARINT = 0;
const WIRE_FIXED32 = 5;
const WIRE_LEN = 2;

/** Accumulates one protobuf message. Nested messages are encoded into their own ProtoWriter. */
class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private length = 0;

  private push(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.length += bytes.length;
  }

  private varint(value: number | bigint): void {
    // int64 fields: negative numbers are two's complement, i.e. 10 bytes.
    let v = BigInt.asUintN(64, BigInt(value));
    const out: number[] = [];
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(Number(v));
    this.push(Uint8Array.from(out));
  }

  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  int(field: number, value: number): this {
    if (!Number.isSafeInteger(value)) throw new Error(`not an integer: ${value}`);
    this.tag(field, WIRE_VARINT);
    this.varint(value);
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.push(b);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    this.varint(value.length);
    this.push(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  message(field: number, inner: ProtoWriter): this {
    return this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// ONNX messages

const AttributeType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

function encodeTensor(t: OnnxTensor): ProtoWriter {
  const w = new ProtoWriter();
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.dataType);
  w.string(8, t.name);
  w.bytes(9, t.raw);
  return w;
}

function encodeAttribute(name: string, a: OnnxAttributeValue): ProtoWriter {
  const w = new ProtoWriter().string(1, name);
  switch (a.kind) {
    case 'float':
      w.float(2, a.value).int(20, AttributeType.FLOAT);
      break;
    case 'int':
      w.int(3, a.value).int(20, AttributeType.INT);
      break;
    case 'string':
      w.string(4, a.value).int(20, AttributeType.STRING);
      break;
    case 'tensor':
      w.message(5, encodeTensor(a.value)).int(20, AttributeType.TENSOR);
      break;
    case 'floats':
      for (const v of a.value) w.float(7, v);
      w.int(20, AttributeType.FLOATS);
      break;
    case 'ints':
      for (const v of a.value) w.int(8, v);
      w.int(20, AttributeType.INTS);
      break;
  }
  return w;
}

function encodeNode(n: OnnxNode): ProtoWriter {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.opType);
  // Sorted attribute names keep the encoding independent of object construction order.
  for (const key of Object.keys(n.attributes ?? {}).sort()) w.message(5, encodeAttribute(key, n.attributes![key]));
  return w;
}

function encodeValueInfo(v: OnnxValueInfo): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.shape) {
    const dim = new ProtoWriter();
    if (typeof d === 'number') dim.int(1, d);
    else dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new ProtoWriter().int(1, v.elemType).message(2, shape);
  const type = new ProtoWriter().message(1, tensorType);
  return new ProtoWriter().string(1, v.name).message(2, type);
}

function encodeGraph(g: OnnxGraph): ProtoWriter {
  const w = new ProtoWriter();
  for (const n of g.nodes) w.message(1, encodeNode(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, encodeTensor(t));
  if (g.docString) w.string(10, g.docString);
  for (const i of g.inputs) w.message(11, encodeValueInfo(i));
  for (const o of g.outputs) w.message(12, encodeValueInfo(o));
  return w;
}

/** Serialise a model to ONNX protobuf bytes (deterministic). */
export function serializeModel(model: OnnxModel): Uint8Array {
  const w = new ProtoWriter();
  w.int(1, model.irVersion ?? 8);
  w.string(2, model.producerName ?? 'kagami');
  if (model.producerVersion) w.string(3, model.producerVersion);
  if (model.docString) w.string(6, model.docString);
  w.message(7, encodeGraph(model.graph));
  // Default ("ai.onnx") operator set: an empty domain field.
  w.message(8, new ProtoWriter().string(1, '').int(2, model.opset ?? 13));
  for (const key of Object.keys(model.metadata ?? {}).sort()) {
    w.message(14, new ProtoWriter().string(1, key).string(2, model.metadata![key]));
  }
  return w.finish();
}
