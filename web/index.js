// The demo page (/): a made-up news site's article page in one edition (?edition=en, ar or es), with
// the real <flash-ticker> under its header, and the snippet a partner copies. A classic deferred
// script that runs before /web/ticker.js (see index.html), and a file rather than inline code, so the
// page's Content-Security-Policy allows scripts from its own origin only.
(() => {
  "use strict";

  const PAGES = {
    en: {
      name: "English",
      dir: "ltr",
      title: "Coastal cities race to finish flood barriers — The Meridian (Flashwire demo)",
      skip: "Skip to the article",
      notice: "Flashwire demo. The Meridian, this article and its names are made up; only the BREAKING bar is live.",
      brand: "The Meridian",
      tagline: "Independent news since 1923",
      editions: "Edition",
      sectionsLabel: "Sections",
      sections: ["Politics", "Economy", "Sports", "Arts & Culture", "Health", "Technology", "Environment", "Miscellaneous"],
      kicker: "Environment",
      headline: "Coastal cities race to finish flood barriers before the storm season",
      standfirst: "Engineers say the new gates could protect two million residents, if the last sections are in place by September.",
      byline: "By Lena Ortiz, environment correspondent",
      placeholder: "Placeholder text for the Flashwire demo: this story did not happen.",
      body: [
        "Work crews along the estuary have moved to round-the-clock shifts as three coastal cities try to close the final gaps in a flood barrier system that has been two decades in the making.",
        "The project, a chain of movable gates and raised embankments, was designed after the floods of 2009 and has been delayed by funding disputes, court challenges and a shortage of specialist steel.",
        "“Every week we gain is a week of risk we remove,” the project's chief engineer said at a briefing on Tuesday, standing beside the half-finished northern gate.",
        "Residents of low-lying districts remain sceptical. Many say they have heard promises before, and local groups are asking for evacuation plans to be published in every language spoken in the area.",
      ],
      readNext: "Read next",
      next: [
        ["Economy", "Central bank holds rates as inflation cools"],
        ["Sports", "Marathon record falls in the rain"],
        ["Arts & Culture", "City museum reopens its Islamic art galleries"],
        ["Health", "How hospitals are preparing for winter"],
      ],
      footer: "The Meridian is a fictional site for the Flashwire demo.",
      filtered: 'topics="politics,mena" min-urgency="urgent"',
    },
    ar: {
      name: "Arabic",
      dir: "rtl",
      title: "المدن الساحلية تسابق الزمن لإكمال حواجز الفيضانات — الميريديان (عرض Flashwire)",
      skip: "انتقل إلى المقال",
      notice: "صفحة تجريبية من Flashwire. صحيفة «الميريديان» وهذا المقال وأسماؤه من نسج الخيال؛ شريط الأخبار العاجلة وحده حيّ.",
      brand: "الميريديان",
      tagline: "أخبار مستقلة منذ 1923",
      editions: "الطبعة",
      sectionsLabel: "الأقسام",
      sections: ["سياسة", "اقتصاد", "رياضة", "فنون وثقافة", "صحة", "تكنولوجيا", "بيئة", "منوعات"],
      kicker: "بيئة",
      headline: "المدن الساحلية تسابق الزمن لإكمال حواجز الفيضانات قبل موسم العواصف",
      standfirst: "يقول المهندسون إن البوابات الجديدة قد تحمي مليوني نسمة إذا اكتملت الأجزاء الأخيرة بحلول سبتمبر.",
      byline: "بقلم لينا أورتيز، مراسلة الشؤون البيئية",
      placeholder: "نص تجريبي لعرض Flashwire: هذا الخبر لم يحدث.",
      body: [
        "انتقلت فرق العمل على طول المصب إلى نوبات على مدار الساعة، إذ تحاول ثلاث مدن ساحلية سد الثغرات الأخيرة في منظومة حواجز للفيضانات استغرق إعدادها عقدين من الزمن.",
        "صُمم المشروع، وهو سلسلة من البوابات المتحركة والسدود المرتفعة، بعد فيضانات عام 2009، وتأخر بسبب خلافات على التمويل وطعون قضائية ونقص في الفولاذ المتخصص.",
        "وقال كبير مهندسي المشروع في إيجاز صحفي يوم الثلاثاء، واقفًا بجوار البوابة الشمالية غير المكتملة: «كل أسبوع نكسبه هو أسبوع من الخطر نزيله».",
        "ولا يزال سكان الأحياء المنخفضة متشككين، ويقول كثيرون منهم إنهم سمعوا الوعود من قبل، فيما تطالب جمعيات محلية بنشر خطط الإخلاء بكل اللغات المحكية في المنطقة.",
      ],
      readNext: "اقرأ أيضًا",
      next: [
        ["اقتصاد", "البنك المركزي يثبّت أسعار الفائدة مع تراجع التضخم"],
        ["رياضة", "تحطيم الرقم القياسي للماراثون تحت المطر"],
        ["فنون وثقافة", "متحف المدينة يعيد افتتاح قاعات الفن الإسلامي"],
        ["صحة", "كيف تستعد المستشفيات لفصل الشتاء"],
      ],
      footer: "«الميريديان» موقع خيالي لعرض Flashwire.",
      filtered: 'topics="mena,politics" min-urgency="urgent"',
    },
    es: {
      name: "Spanish",
      dir: "ltr",
      title: "Las ciudades costeras aceleran sus barreras contra inundaciones — El Meridiano (demo de Flashwire)",
      skip: "Saltar al artículo",
      notice: "Demo de Flashwire. El Meridiano, este artículo y sus nombres son inventados; solo la barra de ÚLTIMA HORA está en directo.",
      brand: "El Meridiano",
      tagline: "Periodismo independiente desde 1923",
      editions: "Edición",
      sectionsLabel: "Secciones",
      sections: ["Política", "Economía", "Deportes", "Arte y Cultura", "Salud", "Tecnología", "Medio ambiente", "Miscelánea"],
      kicker: "Medio ambiente",
      headline: "Las ciudades costeras se apresuran a terminar sus barreras contra inundaciones antes de la temporada de tormentas",
      standfirst: "Los ingenieros aseguran que las nuevas compuertas podrían proteger a dos millones de residentes si los últimos tramos están listos en septiembre.",
      byline: "Por Lena Ortiz, corresponsal de medio ambiente",
      placeholder: "Texto de relleno para la demo de Flashwire: esta noticia no ha ocurrido.",
      body: [
        "Las cuadrillas que trabajan a lo largo del estuario han pasado a turnos de veinticuatro horas mientras tres ciudades costeras intentan cerrar los últimos huecos de un sistema de barreras que lleva dos décadas en preparación.",
        "El proyecto, una cadena de compuertas móviles y diques elevados, se diseñó tras las inundaciones de 2009 y se ha retrasado por disputas de financiación, recursos judiciales y la escasez de acero especializado.",
        "«Cada semana que ganamos es una semana de riesgo que eliminamos», dijo el jefe de ingenieros del proyecto en una rueda de prensa el martes, junto a la compuerta norte a medio terminar.",
        "Los vecinos de los barrios bajos siguen escépticos. Muchos dicen que ya han oído promesas antes, y las asociaciones locales piden que los planes de evacuación se publiquen en todos los idiomas que se hablan en la zona.",
      ],
      readNext: "Lee también",
      next: [
        ["Economía", "El banco central mantiene los tipos mientras se modera la inflación"],
        ["Deportes", "Cae el récord del maratón bajo la lluvia"],
        ["Arte y Cultura", "El museo de la ciudad reabre sus salas de arte islámico"],
        ["Salud", "Cómo se preparan los hospitales para el invierno"],
      ],
      footer: "El Meridiano es un sitio ficticio para la demo de Flashwire.",
      filtered: 'topics="politics,mena" min-urgency="urgent"',
    },
  };

  const SECTIONS = ["politics", "economy", "sports", "arts-culture", "health", "technology", "environment", "miscellaneous"];
  const requested = new URLSearchParams(location.search).get("edition");
  const edition = Object.hasOwn(PAGES, requested || "") ? requested : "en";
  const page = PAGES[edition];
  const byId = (id) => document.getElementById(id);
  const element = (tag, text, className) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  };

  // The document speaks the edition's language, in its direction (the embed panel says lang="en").
  document.documentElement.lang = edition;
  document.documentElement.dir = page.dir;
  document.title = page.title;
  const ticker = byId("ticker");
  ticker.setAttribute("edition", edition);
  ticker.id = `ticker-${edition}`;
  // The "Get breaking alerts" control (web/alerts.js, deferred after this script) for the edition.
  const alerts = byId("alerts");
  alerts.setAttribute("editions", edition);
  alerts.setAttribute("lang", edition);

  for (const node of document.querySelectorAll("[data-text]")) node.textContent = page[node.dataset.text];
  byId("editions").setAttribute("aria-label", page.editions);
  byId("sections").setAttribute("aria-label", page.sectionsLabel);
  byId("brand-link").href = `/?edition=${edition}`;
  for (const link of byId("editions").querySelectorAll("a")) {
    if (link.dataset.edition === edition) link.setAttribute("aria-current", "page");
  }
  // The deployment's default sections (flashwire/core/settings.py). The site is made up, so a section
  // link comes back to this page with that section marked; the article's own section is by default.
  const requestedSection = new URLSearchParams(location.search).get("section");
  const section = SECTIONS.includes(requestedSection || "") ? requestedSection : "environment";
  SECTIONS.forEach((slug, index) => {
    const link = element("a", page.sections[index]);
    link.href = `/?edition=${edition}&section=${slug}`;
    if (slug === section) link.setAttribute("aria-current", "page");
    const item = element("li");
    item.append(link);
    byId("section-list").append(item);
  });
  for (const text of page.body) byId("body").append(element("p", text));
  for (const [section, headline] of page.next) {
    const item = element("li");
    item.append(element("span", section, "next-section"), element("span", headline, "next-headline"));
    byId("read-next-list").append(item);
  }
  const now = new Date();
  const published = byId("published");
  published.dateTime = now.toISOString().slice(0, 10);
  published.textContent = new Intl.DateTimeFormat(edition, { dateStyle: "long" }).format(now);

  // The snippet a partner copies: unfiltered, so it shows every line of the edition; the filtered
  // form is the option underneath.
  const script = `<script src="${location.origin}/web/ticker.js" defer></script>`;
  byId("snippet").textContent = `${script}\n<flash-ticker edition="${edition}"></flash-ticker>`;
  byId("snippet-filtered").textContent = `${script}\n<flash-ticker edition="${edition}" ${page.filtered}></flash-ticker>`;
  byId("edition-name").textContent = page.name;
  byId("cli-hint").textContent = `.venv/bin/flashwire post --edition ${edition} --urgency flash 'Your first breaking line'`;
  for (const format of ["json", "atom", "rss"]) byId(`feed-${format}`).href = `/feeds/${edition}.${format}`;

  const status = byId("copy-status");
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const code = byId(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(code.textContent);
        status.textContent = "Copied to the clipboard.";
      } catch (error) {
        // No clipboard (an insecure origin, or permission refused): select it for Ctrl+C instead.
        const range = document.createRange();
        range.selectNodeContents(code);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        status.textContent = "Selected: press Ctrl+C (⌘C on a Mac) to copy.";
      }
    });
  }
})();
