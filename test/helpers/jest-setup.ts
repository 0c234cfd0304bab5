// Shared jest set-up for every test file (see jest.config.js).
//
// Cross-realm typed arrays. Jest runs each test file in its own vm context, whose globals
// (Float32Array, Uint8Array, ...) are different objects from the main Node realm's. Native addons
// and Node core create their typed arrays in the main realm: onnxruntime-node's output tensors,
// Buffers, etc. Code loaded inside the sandbox (onnxruntime-common's Tensor constructor, for one)
// then tests `data instanceof Float32Array` against the sandbox constructor and fails with
// "A float32 tensor's data must be type of function Float32Array()". In a normal Node process there
// is one realm and the check passes. (transformers.js patches the same problem in its test set-up.)
//
// Fix: make `x instanceof <TypedArray>` also accept a typed array of that exact kind from another
// realm (same [[TypedArrayName]], checked via Object.prototype.toString). Subclasses keep the
// default behaviour, and nothing else changes.
const typedArrays = [
  Int8Array,
  Uint8Array,
  Uint8ClampedArray,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  Float32Array,
  Float64Array,
  BigInt64Array,
  BigUint64Array,
];

for (const ctor of typedArrays) {
  const tag = `[object ${ctor.name}]`;
  const ordinary = Function.prototype[Symbol.hasInstance];
  Object.defineProperty(ctor, Symbol.hasInstance, {
    configurable: true,
    value(this: unknown, x: unknown): boolean {
      if (ordinary.call(this, x)) return true;
      return this === ctor && ArrayBuffer.isView(x) && Object.prototype.toString.call(x) === tag;
    },
  });
}

export {};
