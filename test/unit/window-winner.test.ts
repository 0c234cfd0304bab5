import { negativeKey } from '../../src/scan/reference-set';
import { windowWinner } from '../../src/scan/scanner';

describe('windowWinner', () => {
  it("keeps every reference of the most similar one's character, whatever the order", () => {
    const hits = [
      { id: 'b1', key: 'bob', similarity: 0.81 },
      { id: 'a1', key: 'alice', similarity: 0.86 },
      { id: 'c1', key: 'carol', similarity: 0.7 },
      { id: 'a2', key: 'alice', similarity: 0.62 },
    ];
    expect(windowWinner(hits).map((h) => h.id)).toEqual(['a1', 'a2']);
  });

  it("leaves a window won by a character's negative examples to them alone", () => {
    const hits = [
      { id: 'a1', key: 'alice', similarity: 0.8 },
      { id: 'n1', key: negativeKey('alice'), similarity: 0.9 },
    ];
    expect(windowWinner(hits).map((h) => h.id)).toEqual(['n1']);
  });

  it('gives a window to the negative example when it is exactly as similar as the reference (the same drawing marked as not the character)', () => {
    for (const order of [0, 1]) {
      const hits = [
        { id: 'a1', key: 'alice', similarity: 0.9 },
        { id: 'n1', key: negativeKey('alice'), similarity: 0.9 },
      ];
      if (order) hits.reverse();
      expect(windowWinner(hits).map((h) => h.id)).toEqual(['n1']);
    }
  });

  it('returns nothing for no hits', () => {
    expect(windowWinner([])).toEqual([]);
  });
});
