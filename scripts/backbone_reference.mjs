// Run the shipped TF.js backbone with TensorFlow.js itself, to give the Python
// reader (scones.model.tfjs_graph) an independent reference.
//
//   npm install @tensorflow/tfjs@4        (in any folder; pure JS, no native build)
//   NODE_PATH=<that folder>/node_modules node scripts/backbone_reference.mjs \
//       MODEL_JSON OUTPUT_NODE INPUT_BIN H W
//
// INPUT_BIN holds float32 NHWC [1, H, W, 3]. Prints JSON: the output's shape and
// its mean over the spatial axes (one value per channel).
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";

const require = createRequire(join(process.env.NODE_PATH ?? ".", "x.js"));
const tf = require("@tensorflow/tfjs");

const [modelJson, outputNode, inputBin, h, w] = process.argv.slice(2);
const model = JSON.parse(readFileSync(modelJson, "utf8"));
// The graph declares a fixed input size; the backbone part is fully convolutional.
const placeholder = model.modelTopology.node.find((n) => n.op === "Placeholder");
const dims = placeholder.attr?.shape?.shape?.dim;
if (dims) [dims[1].size, dims[2].size] = [String(h), String(w)];
const group = model.weightsManifest[0];
const shards = group.paths.map((p) => readFileSync(join(dirname(modelJson), p)));
const weights = Buffer.concat(shards);
const handler = tf.io.fromMemory({
  modelTopology: model.modelTopology,
  weightSpecs: group.weights,
  weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
});
const graph = await tf.loadGraphModel(handler);
const raw = readFileSync(inputBin);
const pixels = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
const input = tf.tensor4d(pixels, [1, Number(h), Number(w), 3]);
const out = graph.execute({ [placeholder.name]: input }, outputNode);
const pooled = out.mean([1, 2]).dataSync();
console.log(JSON.stringify({ shape: out.shape, pooled: Array.from(pooled) }));
