// Generates ysync.json: golden y-protocols payloads produced by the reference
// JavaScript implementation (yjs + y-protocols), for the Rust protocol tests.
//
// Deterministic by construction: every Y.Doc gets a fixed clientID, nothing
// depends on time or randomness, and object keys are inserted in fixed order.
// Run: npm ci && node make-vectors.mjs
import { readFileSync, writeFileSync } from 'node:fs'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import * as syncProtocol from 'y-protocols/sync'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'

const here = (p) => new URL(p, import.meta.url)
const versionOf = (pkg) =>
  JSON.parse(readFileSync(here(`./node_modules/${pkg}/package.json`), 'utf8')).version
const hex = (bytes) => Buffer.from(bytes).toString('hex')

// A Y.Doc with a fixed clientID (the default is random).
const makeDoc = (clientID) => Object.assign(new Y.Doc(), { clientID })
const textOf = (doc) => doc.getText('content').toString()

// Wrap a y-protocols writer into a standalone message.
const message = (write) => {
  const encoder = encoding.createEncoder()
  write(encoder)
  return encoding.toUint8Array(encoder)
}
// Run `change` and return the single Yjs update (v1) it emits.
const captureUpdate = (doc, change) => {
  const updates = []
  const onUpdate = (update) => updates.push(update)
  doc.on('update', onUpdate)
  change()
  doc.off('update', onUpdate)
  assert.equal(updates.length, 1, 'expected exactly one update')
  return updates[0]
}
// Decode a step1 message back into {"<client>": clock}.
const stateVectorOf = (msg) => {
  const decoder = decoding.createDecoder(msg)
  assert.equal(decoding.readVarUint(decoder), syncProtocol.messageYjsSyncStep1)
  const sv = Y.decodeStateVector(decoding.readVarUint8Array(decoder))
  return Object.fromEntries([...sv.entries()].sort(([a], [b]) => a - b).map(([c, k]) => [String(c), k]))
}

const vectors = {}

// --- sync step 1 -------------------------------------------------------------
const empty = makeDoc(3)
const step1Empty = message((e) => syncProtocol.writeSyncStep1(e, empty))
vectors.sync_step1_empty = {
  hex: hex(step1Empty),
  description: 'SyncStep1 (type 0) of an empty doc: the state vector has no clients.',
  state_vector: stateVectorOf(step1Empty)
}

const doc1 = makeDoc(1)
const text1 = doc1.getText('content')
text1.insert(0, 'hello')
const step1Text = message((e) => syncProtocol.writeSyncStep1(e, doc1))
vectors.sync_step1_text = {
  hex: hex(step1Text),
  description: 'SyncStep1 (type 0) of client 1\'s doc whose Y.Text "content" is "hello".',
  state_vector: stateVectorOf(step1Text)
}

// --- sync step 2 and updates (a replayable chain) ----------------------------
const chain = [] // [name, applies_to, description, message bytes], in replay order

const emptySV = Y.encodeStateVector(makeDoc(4))
chain.push(['sync_step2_text', 'empty', 'SyncStep2 (type 1) answering an empty state vector: the full state of client 1\'s "hello" doc.',
  message((e) => syncProtocol.writeSyncStep2(e, doc1, emptySV))])

const insert = captureUpdate(doc1, () => text1.insert(text1.length, ' world'))
chain.push(['sync_update_insert', 'sync_step2_text', 'Update (type 2): client 1 appends " world".',
  message((e) => syncProtocol.writeUpdate(e, insert))])

const del = captureUpdate(doc1, () => text1.delete(0, 1))
chain.push(['sync_update_delete', 'sync_update_insert', 'Update (type 2): client 1 deletes the first character (delete-only update: no structs, one delete-set range).',
  message((e) => syncProtocol.writeUpdate(e, del))])

// Client 2 first syncs with client 1's current state, then inserts at index 0.
const doc2 = makeDoc(2)
Y.applyUpdate(doc2, Y.encodeStateAsUpdate(doc1))
const two = captureUpdate(doc2, () => doc2.getText('content').insert(0, 'X'))
chain.push(['sync_update_two_clients', 'sync_update_delete', 'Update (type 2): client 2, synced with client 1\'s "ello world", inserts "X" at index 0.',
  message((e) => syncProtocol.writeUpdate(e, two))])

// Replay the encoded messages through y-protocols into a fresh doc, recording
// the resulting text; fail loudly on any decode error or unexpected text.
const expected = ['hello', 'hello world', 'ello world', 'Xello world']
const replay = makeDoc(5)
chain.forEach(([name, appliesTo, description, msg], i) => {
  const reply = encoding.createEncoder()
  syncProtocol.readSyncMessage(decoding.createDecoder(msg), reply, replay, 'replay',
    (err) => { throw err })
  assert.equal(encoding.length(reply), 0, `${name}: no reply expected`)
  assert.equal(textOf(replay), expected[i], `${name}: chain produced wrong text`)
  assert.equal(replay.store.pendingStructs, null, `${name}: has missing dependencies`)
  vectors[name] = { hex: hex(msg), description, applies_to: appliesTo, text_after: textOf(replay) }
})
assert.equal(textOf(doc2), textOf(replay))

// --- awareness ----------------------------------------------------------------
// Decode an awareness update that carries exactly one client.
const decodeAwareness = (update) => {
  const decoder = decoding.createDecoder(update)
  assert.equal(decoding.readVarUint(decoder), 1, 'expected one client')
  const entry = {
    client_id: decoding.readVarUint(decoder),
    clock: decoding.readVarUint(decoder),
    state: JSON.parse(decoding.readVarString(decoder))
  }
  assert.equal(decoding.hasContent(decoder), false, 'trailing bytes')
  return entry
}

const awareness = new awarenessProtocol.Awareness(makeDoc(7)) // starts with state {} at clock 0
const aliceState = { user: { name: 'Alice', color: '#e06c75' }, cursor: null }
awareness.setLocalState(aliceState)
const awUpdate = awarenessProtocol.encodeAwarenessUpdate(awareness, [7])
awareness.setLocalState(null)
const awRemoval = awarenessProtocol.encodeAwarenessUpdate(awareness, [7])
awareness.destroy() // clears the library's renewal interval so node can exit

const [awSet, awDel] = [awUpdate, awRemoval].map(decodeAwareness)
assert.deepEqual([awSet.state, awDel.state], [aliceState, null])
assert.ok(awDel.clock > awSet.clock, 'removal must bump the clock')

// Check a second peer accepts both messages in order.
const peer = new awarenessProtocol.Awareness(makeDoc(8))
awarenessProtocol.applyAwarenessUpdate(peer, awUpdate, 'test')
assert.deepEqual(peer.getStates().get(7), aliceState)
awarenessProtocol.applyAwarenessUpdate(peer, awRemoval, 'test')
assert.equal(peer.getStates().has(7), false)
peer.destroy()

vectors.awareness_update = {
  hex: hex(awUpdate),
  description: 'Awareness update for client 7 after setLocalState(Alice); the constructor already used clock 0 for the initial {} state.',
  ...awSet
}
vectors.awareness_removal = {
  hex: hex(awRemoval),
  description: 'Awareness update for client 7 after setLocalState(null): state encoded as JSON "null" with a bumped clock.',
  ...awDel
}

// --- write ----------------------------------------------------------------------
// Metadata first, then the entries (flat, in the order they were built).
const out = {
  generated_by: 'make-vectors.mjs',
  yjs_version: versionOf('yjs'),
  y_protocols_version: versionOf('y-protocols'),
  ...vectors
}
writeFileSync(here('./ysync.json'), JSON.stringify(out, null, 2) + '\n')
console.log(`wrote ysync.json (${Object.keys(vectors).length} vectors)`)
