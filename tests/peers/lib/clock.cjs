// A skewable clock for a peer, preloaded with `node --require ./lib/clock.cjs` (the Rust
// harness passes it in NODE_OPTIONS). There is no libfaketime here, so the peer's own notion
// of "now" is shifted instead: `Date.now()` and `new Date()` (no arguments) return the real
// time plus an offset, STAGEPASS_PEER_CLOCK_OFFSET_S seconds at start (may be negative).
// Everything in the peer that reads the clock through Date (oidc-provider's iat/exp, jose)
// sees the skewed time. Node's own HTTP `Date` header comes from an internal copy of Date
// that this cannot reach, so responses get an explicit `Date` header from the skewed clock
// (what a client such as `stagepass doctor` compares its clock with).
//
// The peer may change the offset at run time through `globalThis.stagepassPeerClock.set(s)`
// (the IdP's POST /__test/clock). Without the variable nothing is installed.
'use strict';

const initial = process.env.STAGEPASS_PEER_CLOCK_OFFSET_S;
if (initial !== undefined) {
  const parse = (value) => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new Error(`clock offset must be an integer number of seconds, got ${value}`);
    return n;
  };
  let offsetMs = parse(initial) * 1000;
  const RealDate = Date;
  const realNow = RealDate.now.bind(RealDate);
  class SkewedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(realNow() + offsetMs);
      else super(...args);
    }

    static now() {
      return realNow() + offsetMs;
    }
  }
  globalThis.Date = SkewedDate;
  globalThis.stagepassPeerClock = {
    /** The current offset in seconds. */
    get offsetSecs() {
      return offsetMs / 1000;
    },
    /** Sets the offset (integer seconds, negative: behind). */
    set(secs) {
      offsetMs = parse(secs) * 1000;
      process.stderr.write(`[clock] offset now ${secs}s\n`);
    },
  };

  const http = require('node:http');
  const writeHead = http.ServerResponse.prototype.writeHead;
  http.ServerResponse.prototype.writeHead = function skewedDateHeader(...args) {
    if (!this.headersSent && !this.hasHeader('date')) {
      this.setHeader('Date', new SkewedDate().toUTCString());
    }
    return writeHead.apply(this, args);
  };
  process.stderr.write(`[clock] this peer's clock is shifted by ${initial}s\n`);
}
