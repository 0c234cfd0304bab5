// Moved to src/synthetic/ (the demo and the benchmarks use it too).
export * from '../../src/synthetic/art';
