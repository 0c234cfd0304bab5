// Shared jest set-up for every test file (see jest.config.js).
export {};
