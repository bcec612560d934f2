// Runs LiveKit's official Node server SDK (livekit-server-sdk) against a LiveKit API server,
// in practice the offline emulator, and prints ONE JSON object on stdout: what the SDK
// observed in each scenario (the error it threw, or the fields of what it returned).
//
// Used by tests/test_livekit_emulator_node.py, which starts two emulators and asserts every
// value. Usage:
//
//   node probe.mjs --url http://127.0.0.1:PORT --key KEY --secret SECRET [--oss-url URL]
//
// or with LIVEKIT_URL, LIVEKIT_OSS_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET in the
// environment (the arguments win). `--url` is a LiveKit Cloud-like server, `--oss-url` an
// open-source one (MoveParticipant answers "not implemented"); the scenarios that need it
// are left out without it. The server must know trunk TRUNK and the scripted numbers below.
//
// Exit status: 0 once the JSON is printed (whatever the scenarios observed), 2 on bad
// arguments, 3 when the whole run takes longer than RUN_LIMIT_MS.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import {
  AccessToken,
  RoomServiceClient,
  ServerError,
  SipCallError,
  SipClient,
} from 'livekit-server-sdk';

export const TRUNK = 'ST_node_trunk';
export const MISSING_TRUNK = 'ST_missing_trunk';
export const ANSWERS = '+15550100'; // answers at once
export const BUSY = '+15550101'; // the carrier answers 486 Busy Here
export const NO_ANSWER = '+15550102'; // rings until LiveKit's own ringing timeout
const RUN_LIMIT_MS = 30_000;
const RING_SECS = 1; // the SDK sends BigInt(ringingTimeout): whole seconds only

const watchdog = setTimeout(() => {
  process.stderr.write(`probe: gave up after ${RUN_LIMIT_MS} ms\n`);
  process.exit(3);
}, RUN_LIMIT_MS);
watchdog.unref();

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: 'string' },
        'oss-url': { type: 'string' },
        key: { type: 'string' },
        secret: { type: 'string' },
      },
    }));
  } catch (e) {
    usage(e.message);
  }
  const opts = {
    url: values.url ?? process.env.LIVEKIT_URL,
    ossUrl: values['oss-url'] ?? process.env.LIVEKIT_OSS_URL,
    key: values.key ?? process.env.LIVEKIT_API_KEY,
    secret: values.secret ?? process.env.LIVEKIT_API_SECRET,
  };
  if (!opts.url || !opts.key || !opts.secret) {
    usage('the server URL, API key and API secret are required');
  }
  return opts;
}

function usage(problem) {
  process.stderr.write(
    `probe: ${problem}\nusage: node probe.mjs --url URL --key KEY --secret SECRET [--oss-url URL]\n`,
  );
  process.exit(2);
}

function sdkVersion() {
  // The package's `exports` hide package.json from require.resolve: read it beside us.
  const path = new URL('./node_modules/livekit-server-sdk/package.json', import.meta.url);
  return JSON.parse(readFileSync(path, 'utf8')).version;
}

/** What an error looks like to SDK users; `undefined` becomes null so it survives JSON. */
function describeError(e) {
  const orNull = (v) => (v === undefined ? null : v);
  return {
    className: e?.constructor?.name ?? typeof e,
    name: orNull(e?.name),
    isServerError: e instanceof ServerError,
    isSipCallError: e instanceof SipCallError,
    code: orNull(e?.code),
    codeType: typeof e?.code,
    status: orNull(e?.status),
    message: orNull(e?.message),
    metadata: orNull(e?.metadata),
    sipStatusCode: orNull(e?.sipStatusCode),
    sipStatus: orNull(e?.sipStatus),
  };
}

function describeParticipant(p) {
  return {
    sid: p.sid,
    identity: p.identity,
    name: p.name,
    metadata: p.metadata,
    kind: p.toJson().kind ?? null, // the enum's name, e.g. "SIP"
    state: p.toJson().state ?? null,
    attributes: { ...p.attributes },
    joinedAt: String(p.joinedAt),
    joinedAtMs: String(p.joinedAtMs),
  };
}

/** Run one scenario; record its result or the error it threw, and how long it took. */
async function scenario(results, name, fn) {
  const start = performance.now();
  try {
    const value = await fn();
    results[name] = { ok: true, result: value ?? null };
  } catch (e) {
    results[name] = { ok: false, error: describeError(e) };
  }
  results[name].elapsedMs = Math.round(performance.now() - start);
}

function dialOptions(identity, extra = {}) {
  return { participantIdentity: identity, waitUntilAnswered: true, ringingTimeout: RING_SECS, ...extra };
}

async function cloudScenarios(results, { url, key, secret }) {
  const sip = new SipClient(url, key, secret);
  const rooms = new RoomServiceClient(url, key, secret);

  let dialOpts;
  await scenario(results, 'dial_answered', async () => {
    dialOpts = dialOptions('node-human');
    const info = await sip.createSipParticipant(TRUNK, ANSWERS, 'node-room', dialOpts);
    return {
      className: info.constructor.name,
      participantId: info.participantId,
      participantIdentity: info.participantIdentity,
      roomName: info.roomName,
      sipCallId: info.sipCallId,
      // createSipParticipant rewrites the caller's options (ring window + 2 s margin).
      optsAfter: { ringingTimeout: dialOpts.ringingTimeout, timeout: dialOpts.timeout },
    };
  });
  await scenario(results, 'list_participants', async () => {
    const participants = await rooms.listParticipants('node-room');
    return participants.map(describeParticipant);
  });
  await scenario(results, 'dial_busy', () =>
    sip.createSipParticipant(TRUNK, BUSY, 'node-busy', dialOptions('node-busy')),
  );
  await scenario(results, 'dial_ring_out', () =>
    sip.createSipParticipant(TRUNK, NO_ANSWER, 'node-ring-out', dialOptions('node-ring-out')),
  );
  await scenario(results, 'dial_unknown_trunk', () =>
    sip.createSipParticipant(MISSING_TRUNK, ANSWERS, 'node-nowhere', dialOptions('node-nowhere')),
  );
  await scenario(results, 'delete_missing_room', () => rooms.deleteRoom('node-no-such-room'));

  // Success answers with an empty message: the SDK still parses the body as JSON.
  await scenario(results, 'move_participant_cloud', () =>
    rooms.moveParticipant('node-room', 'node-human', 'node-room-2'),
  );
  await scenario(results, 'list_participants_after_move', async () => {
    const participants = await rooms.listParticipants('node-room-2');
    return participants.map((p) => p.identity);
  });
  await scenario(results, 'delete_room', () => rooms.deleteRoom('node-room-2'));
  await scenario(results, 'list_participants_deleted_room', async () => {
    const participants = await rooms.listParticipants('node-room-2');
    return participants.map((p) => p.identity);
  });

  // Refusals by the auth middleware (text/plain 401) and by the method's grant check.
  const wrongSecret = secret + '-wrong';
  await scenario(results, 'wrong_secret_list_participants', () =>
    new RoomServiceClient(url, key, wrongSecret).listParticipants('node-room'),
  );
  await scenario(results, 'wrong_secret_dial', () =>
    new SipClient(url, key, wrongSecret).createSipParticipant(
      TRUNK,
      ANSWERS,
      'node-room',
      dialOptions('node-wrong-secret'),
    ),
  );
  await scenario(results, 'unknown_api_key', () =>
    new RoomServiceClient(url, key + '-unknown', secret).listParticipants('node-room'),
  );
  const noGrant = new AccessToken(key, secret, { identity: 'node-no-grant', ttl: '5m' });
  noGrant.addGrant({ roomJoin: true, room: 'node-room' }); // neither roomAdmin nor sip.call
  const token = await noGrant.toJwt();
  await scenario(results, 'no_grant_list_participants', () =>
    new RoomServiceClient(url, undefined, undefined, { token }).listParticipants('node-room'),
  );
  await scenario(results, 'no_grant_dial', () =>
    new SipClient(url, undefined, undefined, { token }).createSipParticipant(
      TRUNK,
      ANSWERS,
      'node-room',
      dialOptions('node-no-grant'),
    ),
  );
}

async function ossScenarios(results, { ossUrl: url, key, secret }) {
  const sip = new SipClient(url, key, secret);
  const rooms = new RoomServiceClient(url, key, secret);
  await scenario(results, 'oss_dial_async', async () => {
    const info = await sip.createSipParticipant(TRUNK, ANSWERS, 'node-oss-room', {
      participantIdentity: 'node-oss-human',
    });
    return {
      participantId: info.participantId,
      participantIdentity: info.participantIdentity,
      roomName: info.roomName,
      sipCallId: info.sipCallId,
    };
  });
  await scenario(results, 'oss_move_participant', () =>
    rooms.moveParticipant('node-oss-room', 'node-oss-human', 'node-oss-other-room'),
  );
}

async function main() {
  const opts = options();
  const results = {};
  await cloudScenarios(results, opts);
  if (opts.ossUrl) {
    await ossScenarios(results, opts);
  }
  const out = { node: process.version, sdkVersion: sdkVersion(), scenarios: results };
  process.stdout.write(JSON.stringify(out) + '\n');
}

try {
  await main();
  clearTimeout(watchdog);
} catch (e) {
  process.stderr.write(`probe: ${e?.stack ?? e}\n`);
  process.exit(1);
}
