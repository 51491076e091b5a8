// JsSIP's npm package is CommonJS only: scripts/setup bundles it (esbuild)
// into static/jssip.min.js, which exposes window.JsSIP to join.js.
window.JsSIP = require("jssip");
