/**
 * Converter: TensorFlow.js *layers* model (Keras functional model JSON + weight shards) -> ONNX.
 *
 * It keeps the sub-graph that feeds one named layer (the "trunk", e.g. MobileNetV2 up to
 * `block_10_project_BN`) and appends a retrieval head (GeM pooling over a spatial grid + L2).
 *
 * Layout: the ONNX graph input is NHWC float32 [N,H,W,3] (already normalised by the caller, e.g.
 * x/127.5-1 for MobileNetV2); a Transpose turns it into NCHW, which the whole trunk uses.
 *
 * Layer support: InputLayer, Conv2D, DepthwiseConv2D, BatchNormalization (folded into the preceding
 * conv when that conv feeds only the BN, else Mul+Add; `scale`/`center` false handled), ReLU
 * (max_value -> Clip), Activation (relu, relu6, sigmoid, tanh, linear), ZeroPadding2D (folded into a
 * following 'valid' conv, else Pad), Add, MaxPooling2D, AveragePooling2D ('same' excludes the padding
 * from the average, as TensorFlow does), Concatenate.
 *
 * Keras/TensorFlow conventions reproduced here:
 *  - 'same' padding: out = ceil(in/stride), total = max((out-1)*stride + k_eff - in, 0), and the
 *    extra odd pixel goes to the bottom/right (begin = floor(total/2)). Symmetric for stride 1.
 *  - BatchNormalization: y = (x - mean) / sqrt(var + epsilon) * gamma + beta, epsilon from the
 *    layer config (1e-3 for the Keras applications).
 *  - Quantised weights (uint8/uint16 with {min, scale}) dequantise as v*scale + min, like tfjs.
 * Folding is done in float64 and rounded once to float32; the output is deterministic.
 */
import * as fs from 'fs';
import * as path from 'path';
import { floatTensor, int64Tensor, OnnxNode, OnnxTensor, serializeModel, TensorDataType } from './onnx-writer';

// ---------------------------------------------------------------------------------------------
// tfjs layers-model format

export interface WeightQuantization {
  dtype: 'uint8' | 'uint16' | 'float16';
  min?: number;
  scale?: number;
}

export interface WeightSpec {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32';
  quantization?: WeightQuantization;
}

export interface WeightsGroup {
  paths: string[];
  weights: WeightSpec[];
}

interface KerasLayer {
  name: string;
  class_name: string;
  config: Record<string, any>;
  inbound_nodes: Array<Array<[string, number, number, Record<string, unknown>?]>>;
}

export interface LayersModelJson {
  modelTopology: any;
  weightsManifest: WeightsGroup[];
}

export interface DecodedWeight {
  shape: number[];
  values: Float32Array;
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/** Decode the concatenated weight bytes of all groups (in manifest order) into float32 tensors. */
export function decodeWeights(manifest: WeightsGroup[], data: Uint8Array): Map<string, DecodedWeight> {
  const out = new Map<string, DecodedWeight>();
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let offset = 0;
  for (const group of manifest) {
    for (const spec of group.weights) {
      const count = spec.shape.reduce((a, b) => a * b, 1);
      const values = new Float32Array(count);
      const q = spec.quantization;
      let bytes: number;
      if (!q) {
        bytes = count * 4;
        if (offset + bytes > data.length) throw new Error(`weight data too short at ${spec.name}`);
        for (let i = 0; i < count; i++) {
          values[i] = spec.dtype === 'int32' ? view.getInt32(offset + i * 4, true) : view.getFloat32(offset + i * 4, true);
        }
      } else if (q.dtype === 'uint8' || q.dtype === 'uint16') {
        if (q.min === undefined || q.scale === undefined) throw new Error(`weight ${spec.name}: quantisation without min/scale`);
        const size = q.dtype === 'uint8' ? 1 : 2;
        bytes = count * size;
        if (offset + bytes > data.length) throw new Error(`weight data too short at ${spec.name}`);
        for (let i = 0; i < count; i++) {
          const v = size === 1 ? data[offset + i] : view.getUint16(offset + i * 2, true);
          values[i] = v * q.scale + q.min;
        }
      } else if (q.dtype === 'float16') {
        bytes = count * 2;
        if (offset + bytes > data.length) throw new Error(`weight data too short at ${spec.name}`);
        for (let i = 0; i < count; i++) values[i] = halfToFloat(view.getUint16(offset + i * 2, true));
      } else {
        throw new Error(`weight ${spec.name}: unsupported quantisation ${(q as WeightQuantization).dtype}`);
      }
      offset += bytes;
      out.set(spec.name, { shape: spec.shape, values });
    }
  }
  if (offset !== data.length) throw new Error(`weight data has ${data.length} bytes, manifest describes ${offset}`);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Conversion

export interface GemGridHead {
  type: 'gem-grid';
  /** Cells per side: the final feature map is split into grid x grid cells. */
  grid: number;
  /** GeM exponent. */
  p: number;
  /** Activations are clamped to at least this before the power (default 1e-6). */
  eps?: number;
}

export interface ConvertOptions {
  /** Name of the last trunk layer (its output feeds the head). */
  cutAfter: string;
  head: GemGridHead;
  inputName?: string; // default 'input'
  outputName?: string; // default 'embedding'
  docString?: string;
  metadata?: Record<string, string>;
}

export interface ConversionResult {
  onnx: Uint8Array;
  /** [height, width, channels] of the graph input. */
  inputShape: [number, number, number];
  /** [height, width, channels] of the trunk output. */
  trunkShape: [number, number, number];
  dimension: number;
  nodeCount: number;
}

/**
 * Grid cell boundaries along one axis of length n: cell i covers [floor(i*n/g), floor((i+1)*n/g)).
 * Non-overlapping and covering; for n=14, g=3: [0,4), [4,9), [9,14).
 */
export function gridBounds(n: number, g: number): Array<[number, number]> {
  const b: Array<[number, number]> = [];
  for (let i = 0; i < g; i++) b.push([Math.floor((i * n) / g), Math.floor(((i + 1) * n) / g)]);
  return b;
}

type Shape = [number, number, number]; // H, W, C (batch excluded)

/** TensorFlow 'same'/'valid' output size and [begin, end] padding along one axis. */
function convAxis(inSize: number, k: number, stride: number, dilation: number, padding: string): { out: number; pad: [number, number] } {
  const kEff = (k - 1) * dilation + 1;
  if (padding === 'valid') return { out: Math.floor((inSize - kEff) / stride) + 1, pad: [0, 0] };
  if (padding !== 'same') throw new Error(`unsupported padding '${padding}'`);
  const out = Math.ceil(inSize / stride);
  const total = Math.max((out - 1) * stride + kEff - inSize, 0);
  const begin = Math.floor(total / 2);
  return { out, pad: [begin, total - begin] };
}

function pair(v: number | number[]): [number, number] {
  return Array.isArray(v) ? [v[0], v[1]] : [v, v];
}

/** NHWC axis (Keras channels_last, rank 4) -> NCHW axis. */
function nchwAxis(axis: number): number {
  const a = axis < 0 ? axis + 4 : axis;
  return [0, 2, 3, 1][a];
}

export function convertLayersModel(model: LayersModelJson, weightData: Uint8Array, opts: ConvertOptions): ConversionResult {
  const inputName = opts.inputName ?? 'input';
  const outputName = opts.outputName ?? 'embedding';
  const weights = decodeWeights(model.weightsManifest, weightData);
  const topo = model.modelTopology;
  const config = topo.model_config ?? topo;
  if (config.class_name !== 'Model' && config.class_name !== 'Functional') {
    throw new Error(`expected a functional Keras model, got ${config.class_name}`);
  }
  const layers: KerasLayer[] = config.config.layers;
  const byName = new Map(layers.map((l) => [l.name, l]));
  if (!byName.has(opts.cutAfter)) throw new Error(`layer '${opts.cutAfter}' not found`);

  const inboundOf = (l: KerasLayer): string[] => {
    if (l.inbound_nodes.length === 0) return [];
    if (l.inbound_nodes.length !== 1) throw new Error(`layer ${l.name}: shared layers are not supported`);
    return l.inbound_nodes[0].map(([name, nodeIndex, tensorIndex]) => {
      if (nodeIndex !== 0 || tensorIndex !== 0) throw new Error(`layer ${l.name}: multi-output inbound not supported`);
      return name;
    });
  };

  // Layers needed for the cut point; Keras lists layers in topological order, so filtering keeps it.
  const needed = new Set<string>();
  const stack = [opts.cutAfter];
  while (stack.length) {
    const n = stack.pop()!;
    if (needed.has(n)) continue;
    needed.add(n);
    const l = byName.get(n);
    if (!l) throw new Error(`unknown layer '${n}'`);
    stack.push(...inboundOf(l));
  }
  const order = layers.filter((l) => needed.has(l.name));
  const consumers = new Map<string, KerasLayer[]>();
  for (const l of order) for (const src of inboundOf(l)) consumers.set(src, [...(consumers.get(src) ?? []), l]);
  const soleConsumer = (name: string): KerasLayer | undefined => {
    const c = consumers.get(name) ?? [];
    return c.length === 1 && name !== opts.cutAfter ? c[0] : undefined;
  };

  const weight = (layer: string, param: string): DecodedWeight => {
    const w = weights.get(`${layer}/${param}`);
    if (w) return w;
    for (const [k, v] of weights) if (k.endsWith(`/${layer}/${param}`)) return v;
    throw new Error(`weight ${layer}/${param} not found`);
  };

  const nodes: OnnxNode[] = [];
  const inits: OnnxTensor[] = [];
  const initNames = new Set<string>();
  const addInit = (t: OnnxTensor): string => {
    if (!initNames.has(t.name)) {
      initNames.add(t.name);
      inits.push(t);
    }
    return t.name;
  };
  const scalar = (name: string, v: number) => addInit(floatTensor(name, [], [v]));
  const ints = (name: string, v: number[]) => addInit(int64Tensor(name, [v.length], v));

  const value = new Map<string, string>(); // Keras layer name -> ONNX value name (NCHW)
  const shape = new Map<string, Shape>();
  const absorbedPad = new Map<string, [number, number, number, number]>(); // conv name -> extra [t,l,b,r]
  let inputShape: Shape | undefined;

  const emitActivation = (src: string, act: string, name: string): string => {
    switch (act) {
      case 'linear':
        return src;
      case 'relu':
        nodes.push({ opType: 'Relu', name, inputs: [src], outputs: [name] });
        return name;
      case 'relu6':
        nodes.push({ opType: 'Clip', name, inputs: [src, scalar('const_0', 0), scalar('const_6', 6)], outputs: [name] });
        return name;
      case 'sigmoid':
        nodes.push({ opType: 'Sigmoid', name, inputs: [src], outputs: [name] });
        return name;
      case 'tanh':
        nodes.push({ opType: 'Tanh', name, inputs: [src], outputs: [name] });
        return name;
      default:
        throw new Error(`unsupported activation '${act}'`);
    }
  };

  const bnParams = (bn: KerasLayer, channels: number) => {
    const c = bn.config;
    const axis = c.axis === undefined ? -1 : Array.isArray(c.axis) ? c.axis[0] : c.axis;
    if (axis !== -1 && axis !== 3) throw new Error(`BN ${bn.name}: only channel axis supported (got ${axis})`);
    const eps: number = c.epsilon;
    if (typeof eps !== 'number') throw new Error(`BN ${bn.name}: no epsilon in config`);
    const mean = weight(bn.name, 'moving_mean').values;
    const variance = weight(bn.name, 'moving_variance').values;
    const gamma = c.scale === false ? null : weight(bn.name, 'gamma').values;
    const beta = c.center === false ? null : weight(bn.name, 'beta').values;
    if (mean.length !== channels) throw new Error(`BN ${bn.name}: ${mean.length} channels, input has ${channels}`);
    // y = x*mul + add  (float64)
    const mul = new Float64Array(channels);
    const add = new Float64Array(channels);
    for (let i = 0; i < channels; i++) {
      mul[i] = (gamma ? gamma[i] : 1) / Math.sqrt(variance[i] + eps);
      add[i] = (beta ? beta[i] : 0) - mean[i] * mul[i];
    }
    return { mul, add };
  };

  for (const layer of order) {
    const c = layer.config;
    const ins = inboundOf(layer);
    const inShape = ins.length ? shape.get(ins[0])! : undefined;
    const src = ins.length ? value.get(ins[0])! : '';
    const name = layer.name;
    if (value.has(name)) continue; // absorbed into an earlier node (folded BN)

    switch (layer.class_name) {
      case 'InputLayer': {
        const s = c.batch_input_shape as Array<number | null>;
        if (s.length !== 4 || s[1] == null || s[2] == null || s[3] == null) throw new Error(`input ${name}: need fixed [N,H,W,C]`);
        inputShape = [s[1], s[2], s[3]];
        nodes.push({ opType: 'Transpose', name, inputs: [inputName], outputs: [name], attributes: { perm: { kind: 'ints', value: [0, 3, 1, 2] } } });
        value.set(name, name);
        shape.set(name, inputShape);
        break;
      }
      case 'ZeroPadding2D': {
        const p = c.padding;
        const [[t, b], [l, r]] = Array.isArray(p) ? p.map((x: number | number[]) => pair(x)) : [pair(p), pair(p)];
        const next = soleConsumer(name);
        const outShape: Shape = [inShape![0] + t + b, inShape![1] + l + r, inShape![2]];
        if (next && (next.class_name === 'Conv2D' || next.class_name === 'DepthwiseConv2D') && next.config.padding === 'valid') {
          absorbedPad.set(next.name, [t, l, b, r]); // the conv pads with zeros itself
          value.set(name, src);
        } else {
          const pads = ints(`${name}/pads`, [0, 0, t, l, 0, 0, b, r]);
          nodes.push({ opType: 'Pad', name, inputs: [src, pads], outputs: [name], attributes: { mode: { kind: 'string', value: 'constant' } } });
          value.set(name, name);
        }
        shape.set(name, outShape);
        break;
      }
      case 'Conv2D':
      case 'DepthwiseConv2D': {
        const depthwise = layer.class_name === 'DepthwiseConv2D';
        if (c.data_format && c.data_format !== 'channels_last') throw new Error(`${name}: channels_first not supported`);
        const [kh, kw] = pair(c.kernel_size);
        const [sh, sw] = pair(c.strides);
        const [dh, dw] = pair(c.dilation_rate ?? 1);
        // An absorbed ZeroPadding2D: the conv reads the unpadded tensor and pads it itself; inShape
        // (the padding layer's shape) already includes that padding.
        const extra = absorbedPad.get(name) ?? [0, 0, 0, 0];
        const hIn = inShape![0];
        const wIn = inShape![1];
        const ay = convAxis(hIn, kh, sh, dh, c.padding);
        const ax = convAxis(wIn, kw, sw, dw, c.padding);
        const cin = inShape![2];
        const kernel = weight(name, depthwise ? 'depthwise_kernel' : 'kernel');
        const mult = depthwise ? c.depth_multiplier ?? 1 : 1;
        const cout = depthwise ? cin * mult : c.filters;
        const k = kernel.values;
        const w = new Float64Array(cout * (depthwise ? 1 : cin) * kh * kw);
        if (depthwise) {
          // Keras [kh,kw,cin,mult] -> ONNX [cin*mult, 1, kh, kw] with group = cin
          for (let y = 0; y < kh; y++)
            for (let x = 0; x < kw; x++)
              for (let ch = 0; ch < cin; ch++)
                for (let m = 0; m < mult; m++) w[((ch * mult + m) * kh + y) * kw + x] = k[((y * kw + x) * cin + ch) * mult + m];
        } else {
          // Keras [kh,kw,cin,cout] -> ONNX [cout, cin, kh, kw]
          for (let y = 0; y < kh; y++)
            for (let x = 0; x < kw; x++)
              for (let i = 0; i < cin; i++)
                for (let o = 0; o < cout; o++) w[((o * cin + i) * kh + y) * kw + x] = k[((y * kw + x) * cin + i) * cout + o];
        }
        const bias = new Float64Array(cout);
        if (c.use_bias) {
          const b = weight(name, 'bias').values;
          for (let o = 0; o < cout; o++) bias[o] = b[o];
        }
        // Fold a directly following BatchNormalization (only when nothing else reads the conv output).
        let outLayer = name;
        const next = soleConsumer(name);
        const act = c.activation ?? 'linear';
        if (act === 'linear' && next && next.class_name === 'BatchNormalization') {
          const { mul, add } = bnParams(next, cout);
          const per = w.length / cout;
          for (let o = 0; o < cout; o++) {
            for (let j = 0; j < per; j++) w[o * per + j] *= mul[o];
            bias[o] = bias[o] * mul[o] + add[o];
          }
          outLayer = next.name;
        }
        const needBias = c.use_bias || outLayer !== name;
        const wName = addInit(floatTensor(`${name}/W`, [cout, depthwise ? 1 : cin, kh, kw], Float32Array.from(w)));
        const inputs = [src, wName];
        if (needBias) inputs.push(addInit(floatTensor(`${name}/B`, [cout], Float32Array.from(bias))));
        const convOut = act === 'linear' ? outLayer : `${name}/conv`;
        nodes.push({
          opType: 'Conv',
          name,
          inputs,
          outputs: [convOut],
          attributes: {
            kernel_shape: { kind: 'ints', value: [kh, kw] },
            strides: { kind: 'ints', value: [sh, sw] },
            dilations: { kind: 'ints', value: [dh, dw] },
            group: { kind: 'int', value: depthwise ? cin : 1 },
            pads: { kind: 'ints', value: [extra[0] + ay.pad[0], extra[1] + ax.pad[0], extra[2] + ay.pad[1], extra[3] + ax.pad[1]] },
          },
        });
        const outValue = emitActivation(convOut, act, outLayer);
        const outShape: Shape = [ay.out, ax.out, cout];
        value.set(name, outValue);
        shape.set(name, outShape);
        if (outLayer !== name) {
          value.set(outLayer, outValue);
          shape.set(outLayer, outShape);
        }
        break;
      }
      case 'BatchNormalization': {
        const ch = inShape![2];
        const { mul, add } = bnParams(layer, ch);
        const m = addInit(floatTensor(`${name}/mul`, [ch, 1, 1], Float32Array.from(mul)));
        const a = addInit(floatTensor(`${name}/add`, [ch, 1, 1], Float32Array.from(add)));
        nodes.push({ opType: 'Mul', name: `${name}/Mul`, inputs: [src, m], outputs: [`${name}/scaled`] });
        nodes.push({ opType: 'Add', name, inputs: [`${name}/scaled`, a], outputs: [name] });
        value.set(name, name);
        shape.set(name, inShape!);
        break;
      }
      case 'ReLU': {
        if ((c.negative_slope ?? 0) !== 0 || (c.threshold ?? 0) !== 0) throw new Error(`${name}: leaky/thresholded ReLU not supported`);
        if (c.max_value == null) nodes.push({ opType: 'Relu', name, inputs: [src], outputs: [name] });
        else nodes.push({ opType: 'Clip', name, inputs: [src, scalar('const_0', 0), scalar(`const_${c.max_value}`, c.max_value)], outputs: [name] });
        value.set(name, name);
        shape.set(name, inShape!);
        break;
      }
      case 'Activation': {
        value.set(name, emitActivation(src, c.activation, name));
        shape.set(name, inShape!);
        break;
      }
      case 'Add': {
        let acc = src;
        for (let i = 1; i < ins.length; i++) {
          const out = i === ins.length - 1 ? name : `${name}/${i}`;
          nodes.push({ opType: 'Add', name: out, inputs: [acc, value.get(ins[i])!], outputs: [out] });
          acc = out;
        }
        value.set(name, acc);
        shape.set(name, inShape!);
        break;
      }
      case 'Concatenate': {
        const axis = nchwAxis(c.axis ?? -1);
        if (axis !== 1) throw new Error(`${name}: only channel concatenation supported`);
        nodes.push({ opType: 'Concat', name, inputs: ins.map((i) => value.get(i)!), outputs: [name], attributes: { axis: { kind: 'int', value: 1 } } });
        value.set(name, name);
        shape.set(name, [inShape![0], inShape![1], ins.reduce((s, i) => s + shape.get(i)![2], 0)]);
        break;
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const [kh, kw] = pair(c.pool_size);
        const [sh, sw] = pair(c.strides ?? c.pool_size);
        const ay = convAxis(inShape![0], kh, sh, 1, c.padding);
        const ax = convAxis(inShape![1], kw, sw, 1, c.padding);
        const attributes: OnnxNode['attributes'] = {
          kernel_shape: { kind: 'ints', value: [kh, kw] },
          strides: { kind: 'ints', value: [sh, sw] },
          pads: { kind: 'ints', value: [ay.pad[0], ax.pad[0], ay.pad[1], ax.pad[1]] },
        };
        // TensorFlow's 'same' average pooling divides by the number of real (unpadded) pixels.
        if (layer.class_name === 'AveragePooling2D') attributes.count_include_pad = { kind: 'int', value: 0 };
        nodes.push({ opType: layer.class_name === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', name, inputs: [src], outputs: [name], attributes });
        value.set(name, name);
        shape.set(name, [ay.out, ax.out, inShape![2]]);
        break;
      }
      default:
        throw new Error(`layer ${name}: unsupported layer type ${layer.class_name}`);
    }
  }

  if (!inputShape) throw new Error('no InputLayer reached from the cut point');
  const trunkValue = value.get(opts.cutAfter)!;
  const trunkShape = shape.get(opts.cutAfter)!;

  // ---- Head: GeM over a grid of cells, then L2 normalisation -------------------------------------
  const head = opts.head;
  if (head.type !== 'gem-grid') throw new Error(`unsupported head ${(head as GemGridHead).type}`);
  const [H, W, C] = trunkShape;
  const g = head.grid;
  if (g < 1 || g > H || g > W) throw new Error(`grid ${g} does not fit a ${H}x${W} feature map`);
  nodes.push({ opType: 'Max', name: 'gem/clamp', inputs: [trunkValue, scalar('gem/eps', head.eps ?? 1e-6)], outputs: ['gem/clamped'] });
  nodes.push({ opType: 'Pow', name: 'gem/pow', inputs: ['gem/clamped', scalar('gem/p', head.p)], outputs: ['gem/powered'] });
  const axes = ints('gem/axes', [2, 3]);
  const cells: string[] = [];
  // Cells in row-major order; the embedding is [cell0 channels..., cell1 channels..., ...].
  gridBounds(H, g).forEach(([y0, y1], gy) =>
    gridBounds(W, g).forEach(([x0, x1], gx) => {
      const cell = `gem/cell_${gy}_${gx}`;
      nodes.push({
        opType: 'Slice',
        name: `${cell}/slice`,
        inputs: ['gem/powered', ints(`${cell}/starts`, [y0, x0]), ints(`${cell}/ends`, [y1, x1]), axes],
        outputs: [`${cell}/region`],
      });
      nodes.push({
        opType: 'ReduceMean',
        name: `${cell}/mean`,
        inputs: [`${cell}/region`],
        outputs: [cell],
        attributes: { axes: { kind: 'ints', value: [2, 3] }, keepdims: { kind: 'int', value: 0 } },
      });
      cells.push(cell);
    }),
  );
  nodes.push({ opType: 'Concat', name: 'gem/concat', inputs: cells, outputs: ['gem/means'], attributes: { axis: { kind: 'int', value: 1 } } });
  nodes.push({ opType: 'Pow', name: 'gem/root', inputs: ['gem/means', scalar('gem/inv_p', 1 / head.p)], outputs: ['gem/pooled'] });
  nodes.push({ opType: 'LpNormalization', name: 'l2norm', inputs: ['gem/pooled'], outputs: [outputName], attributes: { axis: { kind: 'int', value: 1 }, p: { kind: 'int', value: 2 } } });

  const dimension = g * g * C;
  const onnx = serializeModel({
    producerName: 'kagami-tfjs-to-onnx',
    producerVersion: '1',
    docString: opts.docString,
    metadata: opts.metadata,
    graph: {
      name: `${opts.cutAfter}+gem${g}x${g}`,
      nodes,
      initializers: inits,
      inputs: [{ name: inputName, elemType: TensorDataType.FLOAT, shape: ['N', inputShape[0], inputShape[1], inputShape[2]] }],
      outputs: [{ name: outputName, elemType: TensorDataType.FLOAT, shape: ['N', dimension] }],
    },
  });
  return { onnx, inputShape, trunkShape, dimension, nodeCount: nodes.length };
}

// ---------------------------------------------------------------------------------------------
// Loading a model shipped as UMD/CommonJS modules inside an npm package (nsfwjs layout)

/** Root folder of an installed package (works even when its `exports` hides package.json). */
export function packageRoot(pkg: string): string {
  let dir = path.dirname(require.resolve(pkg));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj) && JSON.parse(fs.readFileSync(pj, 'utf8')).name === pkg) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the root of package ${pkg}`);
    dir = up;
  }
}

/**
 * Load a layers model from package files: `files` holds the model module and its shard modules
 * (paths relative to the package root); shards are concatenated in weightsManifest order.
 */
export function loadPackagedLayersModel(pkg: string, files: string[]): { model: LayersModelJson; weightData: Uint8Array; version: string } {
  const root = packageRoot(pkg);
  const version: string = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version;
  const load = (f: string): unknown => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const m = require(path.join(root, f));
    return m && typeof m === 'object' && 'default' in m ? (m as { default: unknown }).default : m;
  };
  const modelFile = files.find((f) => /(^|\/)model(\.min)?\.(js|json)$/.test(f));
  if (!modelFile) throw new Error(`no model file among ${files.join(', ')}`);
  const model = load(modelFile) as LayersModelJson;
  if (!model?.modelTopology || !model.weightsManifest) throw new Error(`${modelFile} is not a tfjs layers model`);
  const chunks: Uint8Array[] = [];
  for (const group of model.weightsManifest) {
    for (const shard of group.paths) {
      const file = files.find((f) => path.basename(f).startsWith(`${shard}.`) || path.basename(f) === shard);
      if (!file) throw new Error(`weight shard ${shard} not listed in the manifest files`);
      const content = file.endsWith('.js') ? load(file) : fs.readFileSync(path.join(root, file));
      chunks.push(typeof content === 'string' ? Buffer.from(content, 'base64') : new Uint8Array(content as Buffer));
    }
  }
  return { model, weightData: Buffer.concat(chunks), version };
}
