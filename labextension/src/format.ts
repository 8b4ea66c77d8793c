/** Numbers as the panel shows them. */

export function bytes(n: number): string {
  if (n >= 2 ** 30) {
    return `${(n / 2 ** 30).toFixed(1)} GiB`;
  }
  if (n >= 2 ** 20) {
    return `${(n / 2 ** 20).toFixed(0)} MiB`;
  }
  return `${(n / 2 ** 10).toFixed(0)} KiB`;
}

/** "1.8/23.5 GiB": a used/total pair in the unit of the total. */
export function bytesPair(used: number, total: number): string {
  const [unit, scale] = total >= 2 ** 30 ? ['GiB', 2 ** 30] : ['MiB', 2 ** 20];
  const digits = (n: number) => (n / scale).toFixed(unit === 'GiB' ? 1 : 0);
  return `${digits(used)}/${digits(total)} ${unit}`;
}

export function num(n: number): string {
  return Number.isInteger(n) ? `${n}` : n.toFixed(2).replace(/0+$/, '');
}

export function duration(seconds: number): string {
  if (seconds < 60) {
    return `${Math.floor(seconds)} s`;
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min`;
  }
  if (seconds < 86400) {
    return `${(seconds / 3600).toFixed(1)} h`;
  }
  return `${(seconds / 86400).toFixed(1)} d`;
}

/** A stable color per function name, readable on light and dark backgrounds. */
export function color(name: string): string {
  let h = 0;
  for (let i = 0; i < name.length; i++) {
    h = (h * 31 + name.charCodeAt(i)) >>> 0;
  }
  return `hsl(${h % 360}, 60%, 55%)`;
}

/** Make an element with a class and (optionally) text. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text = ''
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className) {
    e.className = className;
  }
  if (text) {
    e.textContent = text;
  }
  return e;
}
