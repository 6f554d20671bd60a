import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { setDescriptorCid } from '../../src/formats/vmdk-descriptor.js';

function descriptor(cid: string): Buffer {
  const text = `# Disk DescriptorFile\nversion=1\nCID=${cid}\nparentCID=ffffffff\ncreateType="streamOptimized"\n\n# Extent description\nRW 98496 SPARSE "web.vmdk"\n`;
  const b = Buffer.alloc(1024);
  b.write(text, 'latin1');
  return b;
}

// qemu-img prints the CID with %x: a random CID below 0x10000000 has fewer than 8 digits.
for (const cid of ['76a5070', '1f', 'deadbeef']) {
  test(`a ${cid.length}-digit CID from qemu-img is replaced, the rest of the descriptor intact`, () => {
    const before = descriptor(cid);
    const after = setDescriptorCid(before, '0123abcd');
    assert.equal(after.length, before.length);
    const text = after.toString('latin1').replace(/\0+$/, '');
    assert.equal(text, before.toString('latin1').replace(/\0+$/, '').replace(`CID=${cid}\n`, 'CID=0123abcd\n'));
    assert.match(text, /\nparentCID=ffffffff\n/);
  });
}

test('a descriptor without a CID line is refused, showing its start', () => {
  const b = Buffer.alloc(512);
  b.write('# Disk DescriptorFile\nversion=1\n', 'latin1');
  assert.throws(() => setDescriptorCid(b, '0123abcd'), /no CID line \(descriptor starts: "# Disk DescriptorFile/);
});
